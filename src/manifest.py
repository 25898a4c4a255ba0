"""What every output was computed from, and the one rule that says whether it still holds.

Every file the pipeline writes (generations, checkpoints and shards, method outputs,
``scores.json``, tables, reports, replay files) carries a manifest under the key ``manifest``:

- ``inputs``: the SHA-256 of every input file, keyed by its path relative to the output's base
  folder (the results folder) where it lies below it, else relative to the working folder, else
  absolute: two files of one name never collide, and moving a whole results folder does not make
  finished work look stale;
- ``models``: the generation model and the embedder, identified by the content of their weight
  files (and, for a hub id, its resolved revision), not by their names (``src.model_files``);
- ``settings``: every flag and derived value that changes the result;
- ``kind`` (``generations``, ``method``, ``scores``, ...) and, where it applies, ``rows``.

:func:`compare` is the freshness rule, and every consumer goes through it or through a helper
here: skip-if-done (:func:`skip_if_done`), resuming a generation checkpoint and merging shards
(:func:`differences`), ``evaluate``, the paper's tables and replay (:func:`check_recorded`,
:func:`check`). The reproduce driver asks each step's own command, run under :func:`dry_run`,
which records every decision :func:`skip_if_done` would take and does no work. An output is
*fresh* (same inputs, models and settings), *stale* (an input or model changed, appeared or
went away), *other settings* (made with other flags), or *unstamped* (no manifest at all).

This module imports nothing else from the project: everything above it may depend on it.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

KEY = "manifest"
# 2: inputs keyed by relative path (1 keyed them by file name, so two out.json files collided)
FORMAT = 2


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


def input_key(path: str | os.PathLike, base: str | os.PathLike | None) -> str:
    """How a manifest names an input: its path under ``base`` (the results folder), else under the
    working folder, else absolute. Two inputs never share a key, and moving ``base`` with
    everything below it keeps every key."""
    p = Path(os.path.abspath(path))
    for root in ([Path(os.path.abspath(base))] if base else []) + [Path.cwd()]:
        if p.is_relative_to(root):
            return p.relative_to(root).as_posix()
    return p.as_posix()


def input_digests(paths: Iterable[str | os.PathLike], base: str | os.PathLike | None) -> dict[str, str]:
    """``{key: content digest}`` of every file in ``paths`` that exists (a missing file is not an input)."""
    return {input_key(p, base): file_digest(p) for p in paths if Path(p).is_file()}


def build(inputs: Iterable[str | os.PathLike], settings: Mapping[str, Any], *, kind: str,
          base: str | os.PathLike | None, models: Mapping[str, str] | None = None,
          rows: int | None = None) -> dict:
    """The manifest of an output computed from ``inputs`` with ``settings`` and the ``models``
    named by role; ``base`` is the folder input keys are relative to (:func:`input_key`)."""
    manifest = {"format": FORMAT, "kind": kind,
                "inputs": input_digests(inputs, base),
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
    """Every input that changed, appeared or went away between two ``inputs`` maps. An input is
    matched by its key (its relative path) first; one whose key is gone is still the same input
    where a file of the same name and the same content takes its place (a data folder moved
    along with the results), since what was computed from it would not change."""
    reasons = [f"{key} has changed since" for key in current if key in recorded and recorded[key] != current[key]]
    gone = [key for key in recorded if key not in current]
    for key in (k for k in current if k not in recorded):
        same = next((g for g in gone if g.rsplit("/", 1)[-1] == key.rsplit("/", 1)[-1]
                     and recorded[g] == current[key]), None)
        if same is None:
            reasons.append(f"{key} is new since (it was not an input then)")
        else:
            gone.remove(same)
    reasons += [f"its input {key} is no longer there" for key in gone]
    return reasons


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any], what: str = "setting") -> list[str]:
    """Each key whose value differs between two maps, said as ``<what> k was A, now B``."""
    keys = list(current) + [k for k in recorded if k not in current]
    return [f"{what} {k} was {recorded.get(k)!r}, now {current.get(k)!r}"
            for k in keys if recorded.get(k) != current.get(k)]


def _as_recorded(recorded: Mapping, inputs: Mapping[str, str]) -> Mapping[str, str]:
    """``inputs`` keyed the way ``recorded`` keys its own: a manifest written before inputs were
    keyed by path (no ``format``) keyed them by file name, and stays valid while names are unique."""
    if recorded.get("format") == FORMAT:
        return inputs
    by_name: dict[str, str] = {}
    for key, digest in inputs.items():
        name = key.rsplit("/", 1)[-1]
        by_name[name] = digest if name not in by_name else "two inputs of this name"
    return by_name


def compare(recorded: Mapping | None, expected: Mapping) -> Verdict:
    """The freshness rule: ``recorded`` (a file's manifest, or None) against what this run would
    record. Changed inputs or models make it stale; other settings make it another run's result."""
    if not isinstance(recorded, Mapping):
        return Verdict("unstamped", ["it records no manifest (made elsewhere or by an older version)"])
    stale = input_changes(recorded.get("inputs", {}), _as_recorded(recorded, expected.get("inputs", {})))
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


@dataclass
class Decision:
    """What a command decided about one of its outputs before doing any work."""
    path: Path
    state: str  # a Verdict state, or "redo" (--redo given)
    skip: bool
    reasons: list[str] = field(default_factory=list)


_DRY_RUN: contextvars.ContextVar[list[Decision] | None] = contextvars.ContextVar("manifest_dry_run", default=None)


@contextmanager
def dry_run() -> Iterator[list[Decision]]:
    """Run a command to learn what it would do: within this block every :func:`skip_if_done` (and
    :func:`skip_if_present`) records its decision in the list yielded and answers "skip", so the
    command reads its inputs, computes the manifests it would compare, and writes nothing. The
    paper driver asks each step's command this way: a step is done only when its command would
    skip every output."""
    decisions: list[Decision] = []
    token = _DRY_RUN.set(decisions)
    try:
        yield decisions
    finally:
        _DRY_RUN.reset(token)


def _decide(path: str | os.PathLike, state: str, skip: bool, reasons: list[str], message: str) -> bool:
    decisions = _DRY_RUN.get()
    if decisions is None:
        print(message)
        return skip
    decisions.append(Decision(Path(path), state, skip, reasons))
    return True


def skip_if_done(path: str | os.PathLike, redo: bool, expected: Mapping, *, trust_unstamped: bool = False) -> bool:
    """True (and says so) when ``path`` exists, ``--redo`` was not given and it is fresh: finished
    work is reused, anything else recomputed with the reason printed. ``trust_unstamped`` reuses a
    file with no manifest (generations a user brings: too costly to redo unasked)."""
    if redo or not Path(path).exists():
        decisions = _DRY_RUN.get()
        if decisions is not None:
            decisions.append(Decision(Path(path), "redo" if redo else "missing", False))
            return True
        return False
    verdict = check(path, expected)
    if verdict.state == "unstamped" and trust_unstamped:
        return _decide(path, verdict.state, True, verdict.reasons,
                       f"{path} exists (it records no manifest: a file you brought); skipping (use --redo to recompute)")
    if not verdict.fresh:
        label = "is stale" if verdict.state in ("stale", "unstamped") else "was made with other settings"
        return _decide(path, verdict.state, False, verdict.reasons,
                       f"{path} exists but {label} ({verdict.why()}); recomputing")
    return _decide(path, verdict.state, True, [], f"{path} exists; skipping (use --redo to recompute)")


def skip_if_present(paths: Iterable[str | os.PathLike], redo: bool, message: str) -> bool:
    """For outputs that carry no manifest (a dataset's split files, built from a public source
    and checked by their rows): skip when every one exists and ``--redo`` was not given."""
    paths = [Path(p) for p in paths]
    present = not redo and all(p.exists() for p in paths)
    decisions = _DRY_RUN.get()
    if decisions is None:
        if present:
            print(message)
        return present
    decisions += [Decision(p, "fresh" if present else ("redo" if redo else "missing"), present) for p in paths]
    return True


def check_recorded(recorded: Mapping | None, current_files: Iterable[str | os.PathLike],
                   base: str | os.PathLike | None) -> list[str]:
    """For an output read back later (to score, tabulate or replay): why it no longer matches the
    files it would be used with now. ``current_files`` are all of its inputs, so a file that is
    new since (a fifth generator) is a reason too."""
    if not isinstance(recorded, Mapping):
        return ["it records no manifest (made elsewhere or by an older version); rerun the command that makes it"]
    return input_changes(recorded.get("inputs", {}), _as_recorded(recorded, input_digests(current_files, base)))


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
