"""Baseline: rank each sample's candidates with the PairRM reward model (optional; needs
``llm-blender`` and hub access for its weights)."""

from __future__ import annotations

from collections.abc import Sequence

from src import cli
from src.experiment import Experiment
from src.io import write_json
from src.methods.pair_rm import pair_rm_select
from src.paths import Setting


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.pair_rm_baseline", "Select with the PairRM pairwise reward model.")
    cli.add_setting_flags(p)
    p.add_argument("--batch_size", type=int, default=8)
    cli.add_redo_flag(p)
    args = p.parse_args(argv)
    exp = Experiment(Setting.from_args(args), args.dataset_config)
    if cli.already_done(exp.setting.method_file("pair_rm"), args.redo):
        return
    prompts = [r.get("multi_model_prompt") or r["embedding_input"] for r in exp.test_rows]
    picks = pair_rm_select(prompts, exp.test_table.first(), args.batch_size)
    out = exp.setting.method_file("pair_rm")
    write_json(out, {"generations": exp.selections_to_texts(picks), "selected": picks.tolist(),
                     "generators": exp.test_table.names})
    print(f"wrote {out}")


if __name__ == "__main__":
    cli.run(main)
