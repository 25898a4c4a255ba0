"""Random, Best-on-Val (labelled oracle) and labelled-kNN routing, repeated over seeded trials."""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from src.evaluate.metrics import LOWER_IS_BETTER


def orient(scores: np.ndarray, metric_names) -> np.ndarray:
    """Scores where higher is better, whatever each row's metric."""
    flip = np.array([m in LOWER_IS_BETTER for m in metric_names])
    return np.where(flip[:, None], -scores, scores)


def pick_random(n_samples: int, n_generators: int, n_trials: int = 10, seed: int = 42) -> np.ndarray:
    """(trials, N): a uniform pick per sample, per trial."""
    return np.random.default_rng(seed).integers(0, n_generators, size=(n_trials, n_samples))


def labeled_oracle(train_scores: np.ndarray, metric_names, n_test: int, n_labels: int = 50, n_trials: int = 10,
                   seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """(picks (trials, N), labelled train rows (trials, n_labels)): each trial draws ``n_labels``
    labelled train samples, finds the generator with the best mean score on them, and routes
    every test sample to it (Best-on-Val)."""
    scores = orient(train_scores, metric_names)
    rng = np.random.default_rng(seed)
    picks = np.empty((n_trials, n_test), dtype=int)
    draws = np.empty((n_trials, min(n_labels, len(scores))), dtype=int)
    for t in range(n_trials):
        draws[t] = draw = rng.choice(len(scores), size=draws.shape[1], replace=False)
        means = scores[draw].mean(axis=0)
        best = np.flatnonzero(means == means.max())
        picks[t] = best[rng.integers(len(best))]
    return picks, draws


def labeled_knn(train_scores: np.ndarray, metric_names, train_inputs: np.ndarray, test_inputs: np.ndarray,
                k: int = 20, n_labels: int = 50, n_trials: int = 10, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """(picks (trials, N), labelled train rows (trials, n_labels)): each trial draws ``n_labels`` labelled train samples; each test sample goes to
    the generator that is best (ties: all tied generators count) on most of its k nearest
    labelled samples by input embedding; ties between generators broken at random (seeded)."""
    scores = orient(train_scores, metric_names)
    wins = (scores == scores.max(axis=1, keepdims=True)).astype(float)  # (N_train, m)
    rng = np.random.default_rng(seed)
    picks = np.empty((n_trials, len(test_inputs)), dtype=int)
    draws = np.empty((n_trials, min(n_labels, len(scores))), dtype=int)
    for t in range(n_trials):
        draws[t] = draw = rng.choice(len(scores), size=draws.shape[1], replace=False)
        nn = NearestNeighbors(n_neighbors=min(k, len(draw))).fit(train_inputs[draw])
        neighbours = nn.kneighbors(test_inputs, return_distance=False)
        votes = wins[draw][neighbours].sum(axis=1)  # (N_test, m)
        noise = rng.random(votes.shape)  # random tie-break among the top vote counts
        picks[t] = np.argmax(votes + noise * 0.5, axis=1)  # votes are integers: noise < 1 only breaks ties
    return picks, draws


def oracle_and_best(test_scores: np.ndarray, metric_names) -> tuple[float, int]:
    """(mean score of the best generator per sample, index of the best single generator)."""
    scores = orient(test_scores, metric_names)
    oracle_rows = test_scores[np.arange(len(scores)), scores.argmax(axis=1)]
    return float(oracle_rows.mean()), int(scores.mean(axis=0).argmax())
