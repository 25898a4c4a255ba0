"""Reading and validating the pipeline's files, and writing them atomically.

Every reader turns a bad file into a :class:`UserError` that names it, and every writer goes
through a temporary file and ``os.replace`` so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from src.cli import UserError


def write_failed(path: str | os.PathLike, exc: OSError) -> UserError:
    """A failed write (permissions, a full disk, a path through a file) as one line naming the
    place the user chose, not the hidden temporary file beside it."""
    path = Path(path)
    return UserError(f"cannot write {path}: {exc.strerror or exc} (is {path.parent} a writable folder with free "
                     "space?)")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise write_failed(path, exc) from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a shared results folder needs the user's umask
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_failed(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def read_jsonl(path: str | os.PathLike, what: str = "file") -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                if lineno == 1 and _is_one_json_document(path):
                    raise UserError(_NOT_JSONL.format(path=path)) from None
                raise UserError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            if isinstance(row, list) and lineno == 1:
                raise UserError(_NOT_JSONL.format(path=path))
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: each line must be a JSON object")
            rows.append(row)
    return rows


_NOT_JSONL = ("{path} is one JSON document, but a JSONL file is expected: one JSON object per line "
              "(for a JSON list: python -c \"import json,sys; [print(json.dumps(r)) for r in json.load(sys.stdin)]\" "
              "< file.json > file.jsonl)")


def _is_one_json_document(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys to values")
    return data


def read_dataset(path: str | os.PathLike, required: Iterable[str] = ("embedding_input",)) -> list[dict]:
    """A dataset split (JSONL), checked for the fields the caller needs."""
    rows = read_jsonl(path, what="dataset split (run `python -m src.make_dataset` first)")
    for i, row in enumerate(rows):
        missing = [f for f in required if f not in row]
        if missing:
            raise UserError(f"{path}: line {i + 1} lacks field(s) {', '.join(missing)}")
    return rows


def read_generations(path: str | os.PathLike, n_rows: int | None = None) -> list:
    """A generations file ``{"generations": [...]}``; each entry a string or a list of strings."""
    path = Path(path)
    data = read_json(path, what="generations file")
    gens = data.get("generations") if isinstance(data, dict) else None
    if not isinstance(gens, list):
        raise UserError(f"{path}: expected an object with a 'generations' list")
    for i, g in enumerate(gens):
        ok = isinstance(g, str) or (isinstance(g, list) and all(isinstance(s, str) for s in g))
        if not ok:
            raise UserError(f"{path}: entry {i} is neither a string nor a list of strings")
    if n_rows is not None and len(gens) != n_rows:
        raise UserError(f"{path}: has {len(gens)} generations but the dataset has {n_rows} rows")
    return gens


def private_file(path: str | os.PathLike) -> None:
    """Create ``path`` readable by its owner only (0600; SQLite gives its -wal and -shm files the
    same mode), in a folder made 0700 if it is new; an existing file is narrowed to 0600. For
    files that hold users' prompts, answers or their vectors (the gateway's store, caches)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)
