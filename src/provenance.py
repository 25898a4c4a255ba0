"""What an output file was computed from, so that stale results are never reused or scored.

Every file a command writes carries a ``provenance`` entry: the SHA-256 of each input file (by
path) and the settings that shaped it. Rerunning a command compares the entry with the inputs as
they are now: unchanged means the finished file is reused; changed means it is recomputed, and
``evaluate`` refuses to score a method file whose generations have changed since, naming which.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

KEY = "provenance"


@lru_cache(maxsize=4096)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:20]


def file_digest(path: str | os.PathLike) -> str:
    """Content hash of a file (memoised per size and modification time within one process)."""
    st = os.stat(path)
    return _digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def stamp(inputs: Iterable[str | os.PathLike], settings: dict[str, Any]) -> dict:
    """The provenance entry for an output computed from ``inputs`` with ``settings``. Inputs are
    keyed by file name (unique within one results folder and its splits), so moving the folder
    or running from another directory does not make finished work look stale."""
    return {"inputs": {Path(p).name: file_digest(p) for p in inputs if Path(p).is_file()},
            "settings": {k: v for k, v in sorted(settings.items())}}


def stale_reason(recorded: dict | None, current: dict) -> str | None:
    """None when ``recorded`` matches ``current``; else which input or setting differs."""
    if not isinstance(recorded, dict):
        return "it records no provenance (made by an older version)"
    old_inputs, new_inputs = recorded.get("inputs", {}), current["inputs"]
    for name, digest in new_inputs.items():
        if name not in old_inputs:
            return f"it was not computed from {name}"
        if old_inputs[name] != digest:
            return f"{name} has changed since"
    for name in old_inputs:
        if name not in new_inputs:
            return f"its input {name} is no longer used or no longer exists"
    old_settings = recorded.get("settings", {})
    for key, value in current["settings"].items():
        if old_settings.get(key) != value:
            return f"setting {key} was {old_settings.get(key)!r}, now {value!r}"
    return None


def changed_inputs(recorded: dict | None, current_files: Iterable[str | os.PathLike]) -> str | None:
    """For a file read back later: which of its recorded inputs differ from ``current_files``,
    the files it would be scored against now (matched by name)."""
    if not isinstance(recorded, dict):
        return None
    now = {Path(p).name: p for p in current_files if Path(p).is_file()}
    for name, digest in recorded.get("inputs", {}).items():
        if name in now and file_digest(now[name]) != digest:
            return f"{name} has changed since it was computed"
    return None
