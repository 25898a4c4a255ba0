"""Loading a setting's generations as one table, whatever the file layout.

Multi-model settings keep one file per model, multi-prompt settings one file with every prompt's
output; either may hold n sampled generations per sample. Callers get a
:class:`GenerationTable` of shape (N, n, m) and never see the difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.cli import UserError
from src.constants import MODEL_GROUPS
from src.io import read_generations
from src.paths import Setting, n_gens_suffix


@dataclass
class GenerationTable:
    names: list[str]  # the m generators
    texts: np.ndarray  # (N, n, m) object array of strings
    sources: list[Path] = field(default_factory=list)  # the files it was read from (manifests)

    @property
    def n_samples(self) -> int:
        return self.texts.shape[0]

    @property
    def n_generators(self) -> int:
        return self.texts.shape[2]

    def first(self) -> np.ndarray:
        """(N, m): each generator's first generation per sample, the one a route selects."""
        return self.texts[:, 0, :]


def read_setting_generations(setting: Setting, path: Path, n_rows: int) -> list:
    """A generation file's entries for the setting's rows: the first ``n_rows`` under --max_samples
    (a longer, full file serves a quick run), all of them otherwise."""
    if setting.max_samples is None:
        try:
            return read_generations(path, n_rows)
        except UserError:
            from src import manifest

            made_with = ((manifest.read(path) or {}).get("settings") or {}).get("max_samples")
            if made_with:
                raise UserError(
                    f"{path}: holds only the first {made_with} rows (made with --max_samples {made_with}); pass "
                    f"--max_samples {made_with} here too, or regenerate without it"
                ) from None
            raise
    entries = read_generations(path)
    if len(entries) < n_rows:
        raise UserError(f"{path}: has {len(entries)} generations, fewer than the {n_rows} rows asked for "
                        "(--max_samples)")
    return entries[:n_rows]


def group_generators(setting: Setting) -> list[str]:
    """The group's registered models, else every ``<model>_test.json`` in its folder (sorted)."""
    if setting.group in MODEL_GROUPS:
        return list(MODEL_GROUPS[setting.group])
    return setting.discover_generators()


def _as_table(entries: list, n_rows: int, n_generations: int, path) -> np.ndarray:
    out = np.empty((n_rows, n_generations), dtype=object)
    for i, e in enumerate(entries):
        e = [e] if isinstance(e, str) else e
        if len(e) != n_generations:
            raise UserError(f"{path}: entry {i} holds {len(e)} generations, expected {n_generations}")
        out[i] = e
    return out


def generation_files(setting: Setting, split: str) -> list[Path]:
    """The generation files a setting reads for a split (they may not exist yet)."""
    if setting.multi_model:
        return [setting.generations_file(split, name) for name in group_generators(setting)]
    return [setting.generations_file(split)]


def load_generations(setting: Setting, split: str, n_rows: int) -> GenerationTable:
    """The (N, n, m) table of a split; every file checked against the dataset's N rows."""
    n_generations = setting.n_generations
    if setting.multi_model:
        names = group_generators(setting)
        if not names:
            raise UserError(
                f"no generations found in {setting.folder} (expected <model>{n_gens_suffix(n_generations)}_{split}.json "
                "files; run `python -m src.get_generations` first)"
            )
        cols, sources = [], []
        for name in names:
            path = setting.generations_file(split, name)
            cols.append(_as_table(read_setting_generations(setting, path, n_rows), n_rows, n_generations, path))
            sources.append(path)
        texts = np.stack(cols, axis=2)
    else:
        path = setting.generations_file(split)
        sources = [path]
        entries = read_setting_generations(setting, path, n_rows)
        widths = {len(e) if isinstance(e, list) else 1 for e in entries}
        if len(widths) != 1 or next(iter(widths)) % n_generations:
            raise UserError(f"{path}: every entry must hold P x {n_generations} generations (prompt-major)")
        n_prompts = next(iter(widths)) // n_generations
        texts = np.empty((n_rows, n_generations, n_prompts), dtype=object)
        for i, e in enumerate(entries):
            texts[i] = np.array(e, dtype=object).reshape(n_prompts, n_generations).T
        names = [f"prompt_{p}" for p in range(n_prompts)]
    if texts.shape[2] < 3:
        raise UserError(
            f"Smoothie and its baselines need at least 3 generators; {setting.folder} has "
            f"{texts.shape[2]} ({', '.join(names)})"
        )
    return GenerationTable(names=names, texts=texts, sources=sources)


def tables_from_files(paths: list, n_rows: int, names: list[str]) -> GenerationTable:
    """A table from generation files a user brings (one generator per file), for ``src.route``."""
    cols = [_as_table(read_generations(p, n_rows), n_rows, 1, p) for p in paths]
    return GenerationTable(names=names, texts=np.stack(cols, axis=2), sources=list(paths))
