"""Baseline: Best-on-Val. Each trial labels 50 train samples and routes every test sample to the
generator that scores best on them (SPEC 3.4)."""

from __future__ import annotations

from collections.abc import Sequence

from src import cli
from src.experiment import open_experiment
from src.methods.baselines import labeled_oracle


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.labeled_oracle", "Best-on-Val: the best generator on a few labelled train samples.")
    p.add_argument("--n_trials", type=cli.positive_int, default=10)
    p.add_argument("--n_labels", type=cli.positive_int, default=50, help="labelled train samples drawn per trial")
    p.add_argument("--seed", type=int, default=42)
    if (opened := open_experiment(p, argv, "labeled_oracle")) is None:
        return
    args, exp, out, recorded = opened
    picks, draws = labeled_oracle(exp.train_scores, exp.train_metrics, exp.test_table.n_samples, args.n_labels,
                                  args.n_trials, args.seed)
    exp.write_method(out, picks, recorded, labeled_train_rows=draws.tolist())


if __name__ == "__main__":
    cli.run(main)
