"""Baseline: a uniform random generator per sample, over seeded trials (SPEC 3.4)."""

from __future__ import annotations

from collections.abc import Sequence

from src import cli
from src.experiment import open_experiment
from src.methods.baselines import pick_random


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.pick_random_baseline", "Pick a random generation per sample (10 seeded trials).")
    p.add_argument("--n_trials", type=cli.positive_int, default=10)
    p.add_argument("--seed", type=int, default=42)
    if (opened := open_experiment(p, argv, "pick_random")) is None:
        return
    args, exp, out, recorded = opened
    exp.write_method(out, pick_random(exp.test_table.n_samples, exp.test_table.n_generators, args.n_trials,
                                      args.seed), recorded)


if __name__ == "__main__":
    cli.run(main)
