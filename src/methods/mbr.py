"""Minimum-Bayes-risk selection: a label-free baseline the paper's code lacks.

Per sample, pick the generation that agrees most with the others (highest mean similarity to
the other generators' outputs). Smoothie weighs generators by how close they sit to the others
across many samples; MBR uses the same consensus signal with no model of generator quality.
"""

from __future__ import annotations

import numpy as np

from src.evaluate.metrics import rouge2
from src.smoothie import stable_argmax


def mbr_cosine(embeddings: np.ndarray) -> np.ndarray:
    """(N,) selected generator per sample, by mean cosine similarity to the other generations."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    sims = np.einsum("nid,njd->nij", x, x)
    m = x.shape[1]
    mean_other = (sims.sum(axis=2) - np.einsum("nii->ni", sims)) / (m - 1)
    return stable_argmax(mean_other)  # identical outputs tie exactly: the machine must not decide


def mbr_rouge(texts: np.ndarray) -> np.ndarray:
    """(N,) selected generator per sample, by mean ROUGE-2 F against the other generations."""
    n, m = texts.shape
    picks = np.empty(n, dtype=int)
    for i in range(n):
        pair = np.zeros((m, m))
        for a in range(m):
            others = [b for b in range(m) if b != a]
            pair[a, others] = rouge2([str(texts[i, a])] * (m - 1), [str(texts[i, b]) for b in others])
        picks[i] = stable_argmax(pair.sum(axis=1))
    return picks
