"""Vectorised Smoothie against the loop-by-definition estimator, in one process.

The baseline is the paper's algorithm as its code runs it: one fit per sample (Local) or one
fit over all samples (Global), every triplet's three mean squared distances recomputed. Local
baselines fit each sample independently at the same cost, so by default they are timed on a
subset of samples and scaled to N (printed as such); --full times every sample.

    python benchmarks/bench_estimator.py [--full]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reference_smoothie import fit_theta  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402

from src.neighbours import NeighbourIndex  # noqa: E402
from src.smoothie import (  # noqa: E402
    _exact_row_sums,
    deltas_from_row_sums,
    neighbour_matrix,
    row_distance_sums,
    smoothie_weights,
    weights_from_deltas,
)

CASES = [(1000, 5, 768, None), (1000, 5, 768, 1), (2000, 10, 768, None), (2000, 10, 768, 20)]


def best_of(fn, *args, repeat=3, **kwargs):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        times.append(time.perf_counter() - t)
    return min(times), out


def plain_expansion(emb: np.ndarray) -> np.ndarray:
    """The first release's row sums: the expansion alone, duplicates left to rounding."""
    x = emb.astype(np.float64)
    sq = np.einsum("rmd,rmd->rm", x, x)
    dots = np.einsum("rmd,rd->rm", x, x.sum(axis=1))
    return x.shape[1] * sq + sq.sum(axis=1, keepdims=True) - 2.0 * dots


def first_release_weights(emb: np.ndarray, inputs: np.ndarray | None, k: int | None) -> np.ndarray:
    """The first release's estimator: row sums by the expansion alone, one core, then the same
    pooling and neighbour search as now (the speed the exact zeros were said to have cost)."""
    sums = np.concatenate([plain_expansion(emb[s : s + 4096]) for s in range(0, len(emb), 4096)])
    d = emb.shape[-1]
    if k is None:
        return np.tile(weights_from_deltas(deltas_from_row_sums(sums.mean(axis=0)), d)[0], (len(emb), 1))
    nbrs = (np.arange(len(emb))[:, None] if k == 1 else NeighbourIndex(k).fit(inputs).kneighbors(inputs))
    return weights_from_deltas(deltas_from_row_sums(neighbour_matrix(nbrs, len(emb)) @ sums), d)


def loop_local(emb, inputs, k, samples):
    nbrs = (np.arange(len(emb))[:, None] if k == 1 else
            NearestNeighbors(n_neighbors=k).fit(inputs).kneighbors(inputs, return_distance=False))
    return np.stack([fit_theta(emb[nbrs[i]].reshape(-1, *emb.shape[1:])) for i in samples])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--full", action="store_true", help="time the Local baseline on every sample")
    ap.add_argument("--subset", type=int, default=100, help="samples timed for the Local baseline")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print("| N | m | d | mode | vectorised (s) | the first release (s) | now against the first release | "
          "loop by definition (s) | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    sums_rows = []
    for n, m, d, k in CASES:
        emb = rng.normal(size=(n, 1, d)) + rng.uniform(0.3, 1.2, size=(1, m, 1)) * rng.normal(size=(n, m, d))
        emb = (emb / np.linalg.norm(emb, axis=-1, keepdims=True)).astype(np.float32)  # like sentence embeddings
        inputs = rng.normal(size=(n, d)).astype(np.float32)
        fast_t, fast = best_of(smoothie_weights, emb, inputs if k else None, k=k)
        first_t, first = best_of(first_release_weights, emb, inputs if k else None, k)
        assert np.array_equal(fast, first), "weights differ from the first release's"
        if k is None:
            slow_t, slow = best_of(fit_theta, emb, repeat=1)
            np.testing.assert_allclose(fast[0], slow, rtol=1e-5)
            note = ""
        else:
            samples = np.arange(n) if args.full else rng.choice(n, size=min(args.subset, n), replace=False)
            sub_t, slow = best_of(loop_local, emb, inputs, k, samples, repeat=1)
            np.testing.assert_allclose(fast[samples], slow, rtol=1e-5, atol=1e-7)
            slow_t = sub_t * n / len(samples)
            note = "" if args.full else f" (timed on {len(samples)} samples, scaled)"
        mode = "Global" if k is None else f"Local k={k}"
        print(f"| {n} | {m} | {d} | {mode} | {fast_t:.4f} | {first_t:.4f} | {first_t / fast_t:.2f}x | "
              f"{slow_t:.2f}{note} | {slow_t / fast_t:.0f}x |")
        if k is None:  # the distance sums alone: expansion (now) against every pair's differences (before)
            dup = emb.copy()
            dup[::10, 1] = dup[::10, 0]  # a tenth of the rows with two identical generations
            new_t, new = best_of(row_distance_sums, dup)
            old_t, old = best_of(lambda e: _exact_row_sums(e.astype(np.float64)), dup)
            plain_t, _ = best_of(plain_expansion, dup)
            exact_zero = bool((new[::10, 0] == old[::10, 0]).all())
            sums_rows.append(f"| {n} | {m} | {d} | {new_t:.4f} | {old_t:.4f} | {old_t / new_t:.1f}x | {plain_t:.4f} | "
                             f"{np.abs(new - old).max() / np.abs(old).max():.1e} | {exact_zero} |")
    print("\n| N | m | d | row sums now (s) | pairwise differences, the previous release (s) | speed-up | "
          "expansion without exact zeros, the first release (s) | largest relative difference | "
          "duplicated rows exactly 0 apart |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(sums_rows))


if __name__ == "__main__":
    main()
