"""Step 3 of the pipeline: Smoothie's selections for a results folder (SPEC 3.3).

    python -m src.run_smoothie --dataset_config dataset_configs/squad.yaml --model_group 3b \
        --multi_model --type sample_dependent --k 1
"""

from __future__ import annotations

from collections.abc import Sequence

from src import cli, manifest
from src.embeddings import Embedder
from src.experiment import Experiment
from src.io import write_json
from src.paths import Setting
from src.route import add_smoothie_flags, check_k, route_with_flags


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.run_smoothie", "Route each test sample to a generator with Smoothie.")
    cli.add_setting_flags(p)
    add_smoothie_flags(p, type_required=True)
    p.add_argument("--regime", choices=("test_time", "train_time"), default="test_time",
                   help="estimate on the test generations (default) or on the train split's")
    p.add_argument("--use_full_text_embeddings", action="store_true", help="embed input + generation")
    cli.add_redo_flag(p)
    args = p.parse_args(argv)

    setting = Setting.from_args(args)
    exp = Experiment(setting, args.dataset_config, args.no_clean)
    _ = exp.config  # fail early on a missing or malformed config
    out = setting.smoothie_file(args.type, args.k, args.regime, args.embedding_model,
                                full_text=args.use_full_text_embeddings)
    splits = ("train", "test") if args.regime == "train_time" else ("test",)
    settings = {"method": "smoothie", "type": args.type, "k": args.k if args.type == "sample_dependent" else None,
                "regime": args.regime, "embedding_model": args.embedding_model,
                "embedding_backend": args.embedding_backend,
                "embedding_precision": args.embedding_precision, "n_generations": setting.n_generations,
                "full_text": args.use_full_text_embeddings, "on_invalid": args.on_invalid, "clean": exp.clean,
                "neighbours": args.neighbours, "embedding_dtype": args.embedding_dtype}
    check_k(args, len(exp.train_rows) if args.regime == "train_time" else len(exp.test_rows), setting.n_generations,
            args.regime)
    recorded = exp.manifest(settings, splits,
                            {"embedder": Embedder(args.embedding_model, backend=args.embedding_backend,
                                                  precision=args.embedding_precision, device=args.device).identity})
    if manifest.skip_if_done(out, args.redo, recorded):
        return

    rows, table = exp.test_rows, exp.test_table
    train = (exp.train_table, exp.train_rows) if args.regime == "train_time" else None
    routed = route_with_flags(table, args, rows=rows, full_text=args.use_full_text_embeddings, train=train,
                              clean=exp.clean)
    write_json(out, {**routed.to_json(), manifest.KEY: recorded})
    print(f"wrote {out}")


if __name__ == "__main__":
    cli.run(main)
