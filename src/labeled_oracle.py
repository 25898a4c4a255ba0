"""Baseline: Best-on-Val. Each trial labels 50 train samples and routes every test sample to the
generator that scores best on them (SPEC 3.4)."""

from __future__ import annotations

from collections.abc import Sequence

from src import cli
from src.experiment import Experiment
from src.io import write_json
from src.methods.baselines import labeled_oracle
from src.paths import Setting


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.labeled_oracle", "Best-on-Val: the best generator on a few labelled train samples.")
    cli.add_setting_flags(p)
    p.add_argument("--n_trials", type=int, default=10)
    p.add_argument("--n_labels", type=int, default=50, help="labelled train samples drawn per trial")
    p.add_argument("--seed", type=int, default=42)
    cli.add_redo_flag(p)
    args = p.parse_args(argv)
    exp = Experiment(Setting.from_args(args), args.dataset_config)
    if cli.already_done(exp.setting.method_file("labeled_oracle"), args.redo):
        return
    if exp.train_table.names != exp.test_table.names:
        raise cli.UserError(f"{exp.setting.folder}: train and test generations come from different generators")
    picks, draws = labeled_oracle(exp.train_scores, exp.train_metrics, exp.test_table.n_samples, args.n_labels,
                           args.n_trials, args.seed)
    out = exp.setting.method_file("labeled_oracle")
    write_json(out, {"generations": exp.selections_to_texts(picks), "selected": picks.tolist(),
                     "generators": exp.test_table.names, "labeled_train_rows": draws.tolist()})
    print(f"wrote {out}")


if __name__ == "__main__":
    cli.run(main)
