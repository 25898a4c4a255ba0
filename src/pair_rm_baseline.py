"""Baseline: rank each sample's candidates with the PairRM reward model (optional; needs
``llm-blender`` and hub access for its weights)."""

from __future__ import annotations

from collections.abc import Sequence

from src import cli
from src.experiment import open_experiment
from src.methods.pair_rm import pair_rm_select


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.pair_rm_baseline", "Select with the PairRM pairwise reward model.")
    p.add_argument("--batch_size", type=cli.positive_int, default=8)
    if (opened := open_experiment(p, argv, "pair_rm")) is None:
        return
    args, exp, out, recorded = opened
    prompts = [r.get("multi_model_prompt") or r["embedding_input"] for r in exp.test_rows]
    exp.write_method(out, pair_rm_select(prompts, exp.test_table.first(), args.batch_size), recorded)


if __name__ == "__main__":
    cli.run(main)
