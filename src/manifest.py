"""What every output was computed from, and the one rule that says whether it still holds.

Every file the pipeline writes (generations, checkpoints and shards, method outputs,
``scores.json``, tables, reports, replay files) carries a manifest under the key ``manifest``:

- ``inputs``: the SHA-256 of every input file, keyed by file name (unique within one results
  folder, its splits and its config), so moving a folder does not make finished work look stale;
- ``models``: the generation model and the embedder, identified by the content of their weight
  files, not by their names (two fine-tuned checkpoints in folders of the same name differ);
- ``settings``: every flag and derived value that changes the result;
- ``kind`` (``generations``, ``method``, ``scores``, ...) and, where it applies, ``rows``.

:func:`compare` is the freshness rule, and every consumer goes through it or through a helper
here: skip-if-done (:func:`skip_if_done`), resuming a generation checkpoint and merging shards
(:func:`differences`), ``evaluate`` and the reproduce driver (:func:`check_recorded`). An output
is *fresh* (same inputs, models and settings), *stale* (an input or model changed, appeared or
went away), *other settings* (made with other flags), or *unstamped* (no manifest at all).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

KEY = "manifest"
# files whose content makes a model what it is: weights, and the configs and tokenizers that shape its outputs
_MODEL_SUFFIXES = {".safetensors", ".bin", ".gguf", ".onnx", ".pt", ".pth", ".json", ".txt", ".model", ".xml"}


@lru_cache(maxsize=8192)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:20]


def file_digest(path: str | os.PathLike) -> str:
    """Content hash of a file, memoised per path, size and modification time within a process."""
    st = os.stat(path)
    return _digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def _digest_cache_file() -> Path:
    from src.paths import cache_dir

    return cache_dir() / "weight_digests.json"


def _cached_file_digest(path: Path, memo: dict) -> str:
    """``file_digest`` with a cache on disk: hashing a 400 MB weight file once per machine, not per run."""
    st = path.stat()
    key = str(path.resolve())
    hit = memo.get(key)
    if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
        return hit[2]
    digest = file_digest(path)
    memo[key] = [st.st_size, st.st_mtime_ns, digest]
    return digest


def weights_digest(path: str | os.PathLike) -> str:
    """Identity of a model by the content of its files (a folder's weights, configs and tokenizer,
    or one weight file such as a GGUF), cached on disk by path, size and modification time."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        f for f in path.rglob("*") if f.is_file() and f.suffix in _MODEL_SUFFIXES)
    cache = _digest_cache_file()
    try:
        memo = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    before = dict(memo)
    h = hashlib.sha256()
    for f in files:
        rel = f.name if path.is_file() else f.relative_to(path).as_posix()
        h.update(f"{rel}\0{_cached_file_digest(f, memo)}\n".encode())
    if memo != before:
        try:
            from src.io import atomic_write_text

            atomic_write_text(cache, json.dumps(memo))
        except OSError:
            pass  # a read-only cache folder costs time, not correctness
    return h.hexdigest()[:20]


def build(inputs: Iterable[str | os.PathLike], settings: Mapping[str, Any], *, kind: str,
          models: Mapping[str, str] | None = None, rows: int | None = None,
          relative_to: str | os.PathLike | None = None) -> dict:
    """The manifest of an output computed from ``inputs`` (missing files are skipped: a file that
    does not exist is not an input) with ``settings`` and the ``models`` named by role. Inputs
    are keyed by name, or by their path under ``relative_to`` where names repeat (tables)."""

    def key(p: Path) -> str:
        return p.relative_to(relative_to).as_posix() if relative_to else p.name

    manifest = {"kind": kind,
                "inputs": {key(Path(p)): file_digest(p) for p in inputs if Path(p).is_file()},
                "models": dict(sorted((models or {}).items())),
                "settings": dict(sorted(settings.items()))}
    if rows is not None:
        manifest["rows"] = rows
    return manifest


@dataclass
class Verdict:
    state: str  # fresh, missing, unstamped, stale, other_settings
    reasons: list[str] = field(default_factory=list)

    @property
    def fresh(self) -> bool:
        return self.state == "fresh"

    def why(self) -> str:
        return "; ".join(self.reasons)


def input_changes(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """Every input that changed, appeared or went away between two ``inputs`` maps."""
    reasons = []
    for name, digest in current.items():
        if name not in recorded:
            reasons.append(f"{name} is new since (it was not an input then)")
        elif recorded[name] != digest:
            reasons.append(f"{name} has changed since")
    reasons += [f"its input {name} is no longer there" for name in recorded if name not in current]
    return reasons


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any], what: str = "setting") -> list[str]:
    """Each key whose value differs between two maps, said as ``<what> k was A, now B``."""
    keys = list(current) + [k for k in recorded if k not in current]
    return [f"{what} {k} was {recorded.get(k)!r}, now {current.get(k)!r}"
            for k in keys if recorded.get(k) != current.get(k)]


def compare(recorded: Mapping | None, expected: Mapping) -> Verdict:
    """The freshness rule: ``recorded`` (a file's manifest, or None) against what this run would
    record. Changed inputs or models make it stale; other settings make it another run's result."""
    if not isinstance(recorded, Mapping):
        return Verdict("unstamped", ["it records no manifest (made elsewhere or by an older version)"])
    stale = input_changes(recorded.get("inputs", {}), expected.get("inputs", {}))
    stale += differences(recorded.get("models", {}), expected.get("models", {}), "model")
    if stale:
        return Verdict("stale", stale)
    other = differences(recorded.get("settings", {}), expected.get("settings", {}))
    if recorded.get("rows") != expected.get("rows"):
        other.append(f"it holds {recorded.get('rows')} rows, now {expected.get('rows')}")
    return Verdict("other_settings", other) if other else Verdict("fresh")


def read(path: str | os.PathLike) -> dict | None:
    """The manifest a JSON output records, or None (no file, not JSON, or none recorded)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    recorded = data.get(KEY) if isinstance(data, dict) else None
    return recorded if isinstance(recorded, dict) else None


def check(path: str | os.PathLike, expected: Mapping) -> Verdict:
    if not Path(path).exists():
        return Verdict("missing", [f"{path} does not exist"])
    return compare(read(path), expected)


def skip_if_done(path: str | os.PathLike, redo: bool, expected: Mapping, *, trust_unstamped: bool = False) -> bool:
    """True (and says so) when ``path`` exists, ``--redo`` was not given and it is fresh: finished
    work is reused, anything else recomputed with the reason printed. ``trust_unstamped`` reuses a
    file with no manifest (generations a user brings: too costly to redo unasked)."""
    if redo or not Path(path).exists():
        return False
    verdict = check(path, expected)
    if verdict.state == "unstamped" and trust_unstamped:
        print(f"{path} exists (it records no manifest: a file you brought); skipping (use --redo to recompute)")
        return True
    if not verdict.fresh:
        label = "is stale" if verdict.state in ("stale", "unstamped") else "was made with other settings"
        print(f"{path} exists but {label} ({verdict.why()}); recomputing")
        return False
    print(f"{path} exists; skipping (use --redo to recompute)")
    return True


def check_recorded(recorded: Mapping | None, current_files: Iterable[str | os.PathLike],
                   complete: bool = True) -> list[str]:
    """For an output read back later (to score, tabulate or skip): why it no longer matches the
    files it would be used with now. ``current_files`` are those files; with ``complete`` they
    are all of its inputs, so a file that is new since (a fifth generator) is a reason too."""
    if not isinstance(recorded, Mapping):
        return ["it records no manifest (made elsewhere or by an older version); rerun the command that makes it"]
    old = recorded.get("inputs", {})
    if complete:
        return input_changes(old, {Path(p).name: file_digest(p) for p in current_files if Path(p).is_file()})
    # files looked up by name among places they may be (a folder, the data folder, the shipped
    # configs): a recorded input is unchanged when any file of its name still has its content
    found: dict[str, set[str]] = {}
    for p in current_files:
        if Path(p).is_file() and Path(p).name in old:
            found.setdefault(Path(p).name, set()).add(file_digest(p))
    return [f"{name} has changed since" for name, digests in found.items() if old[name] not in digests]


@lru_cache(maxsize=4096)
def _method_name(path: str, size: int, mtime_ns: int) -> str | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    recorded = data.get(KEY)
    if isinstance(recorded, dict):
        return recorded.get("settings", {}).get("method") if recorded.get("kind") == "method" else None
    # no manifest: a method output still says which generators it chose among
    return "" if "selected" in data and "generators" in data else None


def method_name(path: str | os.PathLike) -> str | None:
    """Which routing method made ``path`` by its content: the name its manifest records, ``""``
    for a method output that records none (an older version's), None for anything else (a
    generator's outputs, whatever the file is called: a model named ``mbr_x`` is a generator)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _method_name(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
