"""Step 3 of the pipeline: Smoothie's selections for a results folder (SPEC 3.3).

    python -m src.run_smoothie --dataset_config dataset_configs/squad.yaml --model_group 3b \
        --multi_model --type sample_dependent --k 1
"""

from __future__ import annotations

from collections.abc import Sequence

from src import cli
from src.generations import load_generations
from src.io import read_dataset, read_yaml, write_json
from src.paths import Setting
from src.route import add_smoothie_flags, route_with_flags


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.run_smoothie", "Route each test sample to a generator with Smoothie.")
    cli.add_setting_flags(p)
    add_smoothie_flags(p)
    p.add_argument("--regime", choices=("test_time", "train_time"), default="test_time",
                   help="estimate on the test generations (default) or on the train split's")
    p.add_argument("--n_generations", type=int, default=1, help="sampled generations per sample")
    p.add_argument("--use_full_text_embeddings", action="store_true", help="embed input + generation")
    cli.add_redo_flag(p)
    args = p.parse_args(argv)

    setting = Setting.from_args(args)
    read_yaml(args.dataset_config)  # fail early on a missing or malformed config
    if args.n_generations < 1:
        raise cli.UserError("--n_generations must be at least 1")
    out = setting.smoothie_file(
        args.type, args.k, args.regime, args.embedding_model, args.n_generations, args.use_full_text_embeddings
    )
    if cli.already_done(out, args.redo):
        return

    rows = read_dataset(setting.split_file("test"))
    table = load_generations(setting, "test", len(rows), args.n_generations)
    train = None
    if args.regime == "train_time":
        train_rows = read_dataset(setting.split_file("train"))
        train = (load_generations(setting, "train", len(train_rows), args.n_generations), train_rows)
    routed = route_with_flags(table, args, rows=rows, full_text=args.use_full_text_embeddings, train=train)
    write_json(out, routed.to_json())
    print(f"wrote {out}")


if __name__ == "__main__":
    cli.run(main)
