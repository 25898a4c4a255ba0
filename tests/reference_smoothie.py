"""Smoothie computed literally from SPEC section 4: triplets enumerated, means per definition.

Slow on purpose; it is the yardstick for the vectorised estimator (tests) and the benchmark's
baseline (one fit per sample, every triplet's three distances recomputed, as the paper's code).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
from sklearn.neighbors import NearestNeighbors


def fit_theta(rows: np.ndarray) -> np.ndarray:
    """rows: (S, m, d) -> normalised theta (m,), by the definition."""
    rows = np.asarray(rows, dtype=np.float64)
    _, m, d = rows.shape

    def mean_sq(i, j):
        return (np.linalg.norm(rows[:, i] - rows[:, j], axis=1) ** 2).mean()

    delta = np.zeros(m)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        vals = [0.5 * (mean_sq(i, j) + mean_sq(i, k) - mean_sq(j, k)) for j, k in combinations(others, 2)]
        delta[i] = np.mean(vals)
    theta = d / (2 * delta)
    return theta / theta.sum()


def local_weights(emb: np.ndarray, inputs: np.ndarray, k: int) -> np.ndarray:
    """Per sample: fit on its k nearest samples' generations (k=1: its own)."""
    n = len(emb)
    if k == 1:
        nbrs = np.arange(n)[:, None]
    else:
        nbrs = NearestNeighbors(n_neighbors=k).fit(inputs).kneighbors(inputs, return_distance=False)
    return np.stack([fit_theta(emb[idx].reshape(-1, *emb.shape[-2:])) for idx in nbrs])


def global_weights(emb: np.ndarray) -> np.ndarray:
    rows = emb.reshape(-1, *emb.shape[-2:])
    return np.tile(fit_theta(rows), (len(emb), 1))
