"""Where a task's raw rows come from: the Hugging Face hub, or a local folder.

A local folder holds one file per hub split (``train.*``, ``validation.*``, ``test.*``,
``dev.*`` as JSON, JSONL, CSV or Parquet) with the hub dataset's column names, or is a
``datasets.save_to_disk`` folder. Everything is read through the ``datasets`` library, so a
local copy behaves exactly like the hub's.
"""

from __future__ import annotations

import re
from pathlib import Path

from src.cli import UserError
from src.tasks.registry import Task

BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def _local_split(folder: Path, split: str):
    import datasets

    if (folder / "dataset_dict.json").is_file():
        dd = datasets.load_from_disk(str(folder))
        if split not in dd:
            raise UserError(f"{folder}: saved dataset has no split {split!r} (has {', '.join(dd)})")
        return dd[split], folder
    if (folder / split / "dataset_info.json").is_file():
        return datasets.load_from_disk(str(folder / split)), folder / split
    files = sorted(p for p in folder.glob(f"{split}.*") if p.suffix in BUILDERS)
    if not files:
        raise UserError(f"{folder}: no file for split {split!r} (expected {split}.jsonl, .json, .csv or .parquet)")
    path = files[0]
    try:
        ds = datasets.load_dataset(BUILDERS[path.suffix], data_files=str(path), split="train")
    except Exception as exc:  # the datasets library raises many kinds on a bad file
        raise UserError(f"{path}: could not be read as {BUILDERS[path.suffix]} ({type(exc).__name__})") from None
    return ds, path


def load_split(task: Task, split: str, source: Path | None):
    """(datasets.Dataset, where it came from) for one hub split of a task."""
    import datasets

    datasets.disable_progress_bars()  # make_dataset prints one progress line per task instead
    folder = source or task.builtin_source
    if folder is not None:
        if not Path(folder).is_dir():
            raise UserError(f"--source {folder}: not a folder")
        ds, origin = _local_split(Path(folder), split)
    else:
        try:
            ds = datasets.load_dataset(task.hub_id, task.subset, split=split)
        except Exception as exc:
            raise UserError(
                f"could not load {task.hub_id} ({task.subset or 'default'}, {split}) from the Hugging Face hub "
                f"({type(exc).__name__}); offline, pass --source DIR with local copies of its splits"
            ) from None
        origin = task.hub_id
    missing = [c for c in task.columns if c not in ds.column_names]
    if missing:
        raise UserError(f"{origin}: lacks required column(s) {', '.join(missing)} for task {task.name}")
    return ds


def part_indices(part: str, n: int) -> range:
    """The rows of a loaded split that a task uses (see ``Task.test_part``)."""
    if part == "all":
        return range(n)
    if part == "half1":
        return range(n // 2)
    if part == "half2":
        return range(n // 2, n)
    if m := re.fullmatch(r":(\d+)%", part):
        return range(n * int(m.group(1)) // 100)
    if m := re.fullmatch(r":(\d+)", part):
        return range(min(n, int(m.group(1))))
    if m := re.fullmatch(r"(\d+):", part):
        return range(min(n, int(m.group(1))), n)
    raise ValueError(f"bad part spec {part!r}")
