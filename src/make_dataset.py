"""Step 1 of the pipeline: build a config's train and test splits (SPEC 3.1).

    python -m src.make_dataset --dataset_config dataset_configs/squad.yaml [--source DIR] [--redo]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from src import cli, manifest
from src.io import write_json, write_jsonl
from src.paths import SPLITS, Setting, results_root, split_file
from src.tasks.build import build_split
from src.tasks.config import load_config


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.make_dataset", "Build a dataset config's train and test splits.")
    p.add_argument("--dataset_config", required=True, help="dataset_configs/<config>.yaml")
    p.add_argument("--data_dir", default=None, help="output folder (default $HF_DATASETS_DIR/datasets)")
    p.add_argument("--source", default=None,
                   help="local folder with the dataset's split files (train.*, validation.*, test.*, dev.*)")
    p.add_argument("--results_dir", default=None, help="where shipped candidates go (MixInstruct)")
    p.add_argument("--redo", action="store_true", help="rebuild files that already exist")
    args = p.parse_args(argv)

    config = load_config(args.dataset_config)
    if args.source:
        if config.is_group:
            raise cli.UserError("--source applies to one task; put a 'source:' key in each task's config instead")
        config.tasks[0].source = Path(args.source)
    outputs = {s: split_file(config.stem, s, args.data_dir) for s in SPLITS}
    if manifest.skip_if_present(outputs.values(), args.redo,
                                f"{outputs['train']} and {outputs['test']} exist; left untouched (use --redo to rebuild)"):
        return
    print(f"building {config.stem} ({', '.join(t.task.name for t in config.tasks)})")
    setting = Setting(config=config.stem, results_dir=results_root(args.results_dir), group="mix_instruct")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda msg, *a, **k: print(f"  warning: {msg}")
        for split, path in outputs.items():
            rows, generations = build_split(config, split)
            write_jsonl(path, rows)
            print(f"wrote {path} ({len(rows)} rows)")
            for model, texts in sorted((generations or {}).items()):
                write_json(setting.generations_file(split, model), {"generations": texts})
            if generations:
                print(f"wrote {len(generations)} candidates' {split} generations to {setting.folder}")


if __name__ == "__main__":
    cli.run(main)
