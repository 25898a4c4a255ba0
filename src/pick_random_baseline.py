"""Baseline: a uniform random generator per sample, over seeded trials (SPEC 3.4)."""

from __future__ import annotations

from collections.abc import Sequence

from src import cli
from src.experiment import Experiment
from src.io import write_json
from src.methods.baselines import pick_random
from src.paths import Setting


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.pick_random_baseline", "Pick a random generation per sample (10 seeded trials).")
    cli.add_setting_flags(p)
    p.add_argument("--n_trials", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    cli.add_redo_flag(p)
    args = p.parse_args(argv)
    exp = Experiment(Setting.from_args(args), args.dataset_config)
    if cli.already_done(exp.setting.method_file("pick_random"), args.redo):
        return
    table = exp.test_table
    picks = pick_random(table.n_samples, table.n_generators, args.n_trials, args.seed)
    out = exp.setting.method_file("pick_random")
    write_json(out, {"generations": exp.selections_to_texts(picks), "selected": picks.tolist(),
                     "generators": table.names})
    print(f"wrote {out}")


if __name__ == "__main__":
    cli.run(main)
