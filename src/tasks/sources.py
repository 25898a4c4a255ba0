"""Where a task's raw rows come from: the Hugging Face hub, or a local folder.

A local folder holds one file per hub split (``train.*``, ``validation.*``, ``test.*``,
``dev.*`` as JSON, JSONL, CSV or Parquet) with the hub dataset's column names, or is a
``datasets.save_to_disk`` folder, or a copy of the hub's Parquet conversion
(``<config>/<split>/*.parquet``, the branch ``refs/convert/parquet``). Everything is read through the ``datasets`` library, so a
local copy behaves exactly like the hub's.
"""

from __future__ import annotations

import re
from pathlib import Path

from src.cli import UserError
from src.tasks.registry import Task

BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def load_file(path: Path):
    """A whole dataset in one JSON, JSONL, CSV or Parquet file (a user's own task)."""
    import datasets

    if path.suffix not in BUILDERS:
        raise UserError(f"--source {path}: expected a .jsonl, .json, .csv or .parquet file")
    try:
        return datasets.load_dataset(BUILDERS[path.suffix], data_files=str(path), split="train")
    except Exception as exc:  # the datasets library raises many kinds on a bad file
        raise UserError(f"{path}: could not be read as {BUILDERS[path.suffix]} ({type(exc).__name__})") from None


def _local_split(folder: Path, split: str, task: Task | None = None):
    import datasets

    export = folder / export_config(task) / split if task is not None else None
    if export is not None and export.is_dir() and any(export.glob("*.parquet")):
        return load_parquet_export(str(folder), export_config(task), split), export

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


PARQUET_EXPORT = "refs/convert/parquet"  # the hub's automatic Parquet conversion of every dataset
SCRIPT_ERROR = "scripts are no longer supported"


def export_config(task: Task) -> str:
    """The folder of a task's config in the hub's Parquet conversion (``default`` without one)."""
    return task.subset or "default"


def load_parquet_export(base: str, config: str, split: str):
    """One split from a tree in the layout of the hub's Parquet conversion,
    ``<base>/<config>/<split>/*.parquet``; ``base`` is a local folder or
    ``hf://datasets/<id>@refs%2Fconvert%2Fparquet``. Explicit data files keep split names such
    as ``dev`` as they are (pattern inference would rename it ``validation``)."""
    import datasets

    return datasets.load_dataset("parquet", data_files={split: f"{base}/{config}/{split}/*.parquet"}, split=split)


def hub_export_base(hub_id: str) -> str:
    return f"hf://datasets/{hub_id}@{PARQUET_EXPORT.replace('/', '%2F')}"


def load_hub_split(task: Task, split: str):
    """A split from the hub. datasets >= 4 no longer runs loading scripts, and some of the
    paper's datasets still ship one (legalbench; perhaps others by the time you run this): those
    are read from the hub's Parquet conversion instead, first when the registry says so, else
    after the script error."""
    import datasets

    from src.hub import ensure_reachable_or_offline

    ensure_reachable_or_offline()
    if not task.parquet_export:
        try:
            return datasets.load_dataset(task.hub_id, task.subset, split=split)
        except RuntimeError as exc:
            if SCRIPT_ERROR not in str(exc):
                raise
    return load_parquet_export(hub_export_base(task.hub_id), export_config(task), split)


def load_split(task: Task, split: str, source: Path | None):
    """(datasets.Dataset, where it came from) for one hub split of a task."""
    import datasets

    datasets.disable_progress_bars()  # make_dataset prints one progress line per task instead
    folder = source or task.builtin_source
    if folder is not None and Path(folder).is_file():
        ds, origin = load_file(Path(folder)), folder
    elif folder is not None:
        if not Path(folder).is_dir():
            raise UserError(f"--source {folder}: neither a file nor a folder")
        ds, origin = _local_split(Path(folder), split, task)
    elif task.hub_id is None:
        raise UserError(f"task {task.name} has no hub dataset: give --source FILE_OR_DIR or a source: key in its config")
    else:
        try:
            ds = load_hub_split(task, split)
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
