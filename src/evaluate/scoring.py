"""Scoring generations against a dataset's references, row by row with each row's task metric.

Generations are cleaned (first line, no special tokens) before scoring, except for the tasks
whose whole output counts (``src.cleaning.UNCLEANED_TASKS``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from src.cleaning import clean_for_task
from src.cli import UserError
from src.evaluate.metrics import METRICS, TASK_METRIC


def row_metrics(rows: Sequence[dict], overrides: dict[str, str] | None = None) -> list[str]:
    """The metric of each row: its task's (or the config's override for that task)."""
    overrides = overrides or {}
    names = []
    for r in rows:
        task = r.get("task_name")
        name = overrides.get(task) or TASK_METRIC.get(task)
        if name is None:
            raise UserError(f"no metric is known for task {task!r}; add one to the config's 'metrics'")
        if name not in METRICS:
            raise UserError(f"unknown metric {name!r} (known: {', '.join(sorted(METRICS))})")
        names.append(name)
    return names


def score_rows(generations: Sequence[str], rows: Sequence[dict], metrics: Sequence[str], clean: bool = True
               ) -> np.ndarray:
    """Per-sample scores of one generation per row (``clean=False``: scored as they are)."""
    if len(generations) != len(rows):
        raise ValueError(f"{len(generations)} generations for {len(rows)} rows")
    out = np.empty(len(rows))
    by_metric: dict[str, list[int]] = {}
    for i, m in enumerate(metrics):
        by_metric.setdefault(m, []).append(i)
    for name, idx in by_metric.items():
        gens = [clean_for_task(generations[i], rows[i].get("task_name")) if clean else generations[i] for i in idx]
        out[idx] = METRICS[name](gens, [rows[i]["reference"] for i in idx])
    return out


def score_table(texts: np.ndarray, rows: Sequence[dict], metrics: Sequence[str], clean: bool = True) -> np.ndarray:
    """(N, m) per-sample scores of every generator's generation (texts is (N, m))."""
    return np.stack([score_rows([str(t) for t in texts[:, j]], rows, metrics, clean) for j in range(texts.shape[1])],
                    axis=1)
