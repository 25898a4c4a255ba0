"""The Smoothie estimator (SPEC section 4), vectorised with numpy (scipy's sparse matrices for the
neighbour pooling, ``src.neighbours`` for Smoothie-Local's nearest samples: exact search up to
50,000 samples, FAISS's approximate index above).

Model: each generator's embedding is the unknown true embedding plus isotropic Gaussian noise,
lambda_i = y + eps_i with E||eps_i||^2 = delta_i. For three generators the triplet identity
E||l_i - l_j||^2 + E||l_i - l_k||^2 - E||l_j - l_k||^2 = 2 delta_i recovers delta_i without y.
Smoothie averages it over every pair {j, k} of the other generators and turns the error into
the Gaussian's canonical parameter theta_i = d / (2 delta_i), normalised to sum to 1.

Why this is fast: with D[i, j] the mean squared distance over a sample set S, the average over
pairs has the closed form

    delta_i = ((m - 1) R_i - T / 2) / ((m - 1)(m - 2)),   R_i = sum_j D[i, j],  T = sum_i R_i,

and R_i is itself a mean, over S, of per-row sums r_i = sum_j ||l_i - l_j||^2, which need no
m x m matrix: r_i = m ||l_i||^2 + sum_j ||l_j||^2 - 2 <l_i, sum_j l_j>. Global Smoothie is then
one mean of r over all rows; Local Smoothie is one sparse (neighbours x samples) product with r.
The paper's code loops over samples and triplets; the result is the same to rounding.

Rows where some delta_i <= 0 (squared distances break the triangle inequality on real data)
follow the paper by default ("parity"): theta_i = d / (2 delta_i) may be negative and is still
normalised by its sum, and the argmax picks. Rows that the formula cannot give finite weights
for get these, documented, rules: if some delta_i is exactly 0, those generators share the
weight equally (the limit delta -> 0+); if a delta is not finite or the theta sum is 0, the
weights are uniform (the pick falls to the first generator). ``on_invalid="argmin"`` instead
puts all weight on the generator with the smallest delta in every row that has a delta <= 0.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import sparse

from src.neighbours import METHODS as NEIGHBOUR_METHODS
from src.neighbours import NeighbourIndex

ON_INVALID = ("parity", "argmin")
_CHUNK = 256  # rows converted to float64 at a time: bounded memory, and blocks that stay in cache
_BLOCKS_PER_TASK = 64  # blocks one thread takes at a time (a memmap is read in ~these-sized pieces)


class SmoothieWarning(UserWarning):
    """Some rows had non-positive or non-finite error estimates (see module docstring)."""


def _exact_row_sums(block: np.ndarray) -> np.ndarray:
    """Row sums from the coordinate differences of every pair: identical generations at exactly 0."""
    m = block.shape[1]
    sums = np.zeros(block.shape[:2])
    for i in range(m):
        for j in range(i + 1, m):
            diff = block[:, i] - block[:, j]
            dist = np.einsum("rd,rd->r", diff, diff)
            sums[:, i] += dist
            sums[:, j] += dist
    return sums


def _rows_with_close_pairs(norms: np.ndarray, dots: np.ndarray) -> np.ndarray:
    """Rows where two generations might be identical: equal, to rounding, in their norm and in
    their dot with the row's sum (identical vectors always are; a false alarm only costs the
    exact path). Both keys come from the expansion's own pass, so finding them reads no data."""
    keys = np.stack([norms, dots], axis=-1)  # (r, m, 2)
    tol = 1e-9 * (1.0 + np.abs(keys))
    m = norms.shape[1]
    found = np.zeros(len(norms), dtype=bool)
    for i in range(m):
        for j in range(i + 1, m):
            found |= (np.abs(keys[:, i] - keys[:, j]) <= np.maximum(tol[:, i], tol[:, j])).all(axis=-1)
    return found


def _block_row_sums(block: np.ndarray) -> np.ndarray:
    """Row sums of one (r, m, d) block by the expansion, exact for rows with possible duplicates."""
    block = block.astype(np.float64, copy=False)
    m = block.shape[1]
    norms = np.einsum("rmd,rmd->rm", block, block)
    dots = np.einsum("rmd,rd->rm", block, block.sum(axis=1))
    sums = m * norms + norms.sum(axis=1, keepdims=True) - 2.0 * dots
    dup = _rows_with_close_pairs(norms, dots)
    if dup.any():
        sums[dup] = _exact_row_sums(block[dup])
    return sums


def _n_threads() -> int:
    """The cores this process may use (affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def row_distance_sums(embeddings: np.ndarray) -> np.ndarray:
    """Per row of m generations, r_i = sum_j ||l_i - l_j||^2, in float64. Shape (..., m, d) -> (..., m).

    Expanded without pairs: r_i = m ||l_i||^2 + sum_j ||l_j||^2 - 2 <l_i, sum_j l_j>, one pass over
    the data. Rows where two generations may be identical are summed again from the coordinate
    differences, so identical outputs sit at exactly 0 and the documented delta == 0 rule fires on
    them instead of rounding noise of either sign (found apart from the expansion, by its own norms
    and dots: no second pass over the data).

    numpy's einsum runs on one core, so blocks of rows go to one thread per core (numpy releases
    the GIL); each row's arithmetic is the same whatever the blocking, so the result does not
    depend on the thread count.
    """
    x = np.asarray(embeddings)
    lead, (m, d) = x.shape[:-2], x.shape[-2:]
    flat = x.reshape(-1, m, d)
    out = np.empty(flat.shape[:2], dtype=np.float64)
    # rows per task: a few blocks' worth, and small enough that every core gets work on small inputs
    step = min(_CHUNK * _BLOCKS_PER_TASK, -(-len(flat) // _n_threads()))
    step = max(_CHUNK, -(-step // _CHUNK) * _CHUNK)

    def run(start: int) -> None:
        stop = min(start + step, len(flat))
        for s in range(start, stop, _CHUNK):
            out[s : min(s + _CHUNK, stop)] = _block_row_sums(flat[s : min(s + _CHUNK, stop)])

    starts = range(0, len(flat), step)
    if len(starts) == 1:
        run(0)
    else:
        with ThreadPoolExecutor(max_workers=_n_threads()) as pool:
            list(pool.map(run, starts))  # list(): re-raises a worker's exception here
    return out.reshape(*lead, m)


def deltas_from_row_sums(row_sums: np.ndarray) -> np.ndarray:
    """delta_i, the triplet estimate averaged over all pairs of other generators, from R_i."""
    m = row_sums.shape[-1]
    total = row_sums.sum(axis=-1, keepdims=True)
    return ((m - 1) * row_sums - total / 2.0) / ((m - 1) * (m - 2))


def weights_from_deltas(deltas: np.ndarray, dim: int, on_invalid: str = "parity") -> np.ndarray:
    """theta = d / (2 delta), normalised per row; invalid rows handled as the module docstring says."""
    if on_invalid not in ON_INVALID:
        raise ValueError(f"on_invalid must be one of {ON_INVALID}, not {on_invalid!r}")
    deltas = np.atleast_2d(np.asarray(deltas, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        theta = dim / (2.0 * deltas)
        weights = theta / theta.sum(axis=-1, keepdims=True)
    finite_delta = np.isfinite(deltas).all(axis=-1)
    nonpositive = (deltas <= 0).any(axis=-1) & finite_delta
    n_bad = int(nonpositive.sum() + (~finite_delta).sum())
    if n_bad:
        warnings.warn(
            f"{n_bad} of {len(deltas)} rows have a non-positive or non-finite error estimate (some generators "
            f"agree more closely than the Gaussian model allows, often identical outputs); they follow the "
            f"'{on_invalid}' rule. Nothing to do if that is expected; --on_invalid argmin gives all weight to "
            f"the smallest estimate instead (docs/notes.md)",
            SmoothieWarning,
            stacklevel=3,
        )
    if on_invalid == "argmin":
        # every row with a delta <= 0: the smallest delta wins (ties share), zeros included
        rows = np.flatnonzero(nonpositive)
        best = deltas[rows] == deltas[rows].min(axis=-1, keepdims=True)
        weights[rows] = best / best.sum(axis=-1, keepdims=True)
    else:
        zero = (deltas == 0).any(axis=-1) & finite_delta
        weights[zero] = (deltas[zero] == 0) / (deltas[zero] == 0).sum(axis=-1, keepdims=True)
    broken = ~np.isfinite(weights).all(axis=-1)
    weights[broken] = 1.0 / deltas.shape[-1]
    return weights


def _as_rows(embeddings: np.ndarray) -> np.ndarray:
    """(N, m, d) -> (N, 1, m, d); (N, n, m, d) kept: n sampled generation sets per sample."""
    x = np.asarray(embeddings)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"embeddings must be (N, m, d) or (N, n, m, d), got shape {x.shape}")
    if x.shape[2] < 3:
        raise ValueError(f"Smoothie needs at least 3 generators (the triplet identity); got m={x.shape[2]}")
    if x.shape[0] == 0:
        raise ValueError("no samples to fit")
    return x


def neighbour_matrix(neighbours: np.ndarray, n_columns: int) -> sparse.csr_matrix:
    """Row q averages the columns listed in ``neighbours[q]``: a (Q, n_columns) sparse matrix."""
    q, k = neighbours.shape
    data = np.full(q * k, 1.0 / k)
    return sparse.csr_matrix((data, (np.repeat(np.arange(q), k), neighbours.ravel())), shape=(q, n_columns))


class Smoothie:
    """Label-free weights over m generators, in the style of a scikit-learn estimator.

    ``fit`` sees the generations whose agreement estimates the errors (the test split itself in
    the paper's test_time regime, the train split in train_time); ``predict_weights`` returns
    weights for query samples, located by their input embeddings when ``k`` is set.

    Parameters
    ----------
    k : None for Smoothie-Global (one theta for every sample); an int for Smoothie-Local, the
        number of nearest fitted samples (by input embedding) whose generations are pooled.
    on_invalid : "parity" (the paper's behaviour) or "argmin"; see the module docstring.
    neighbours : "auto", "exact" or "approx": how Smoothie-Local finds the k nearest samples
        (see ``src.neighbours``; "auto" is exact up to 50,000 fitted samples).

    The generation embeddings may be a read-only memmap (``np.load(..., mmap_mode="r")``, float16
    allowed): they are read in chunks, so only (N, m) row sums are held in memory.
    """

    def __init__(self, k: int | None = None, on_invalid: str = "parity", neighbours: str = "auto"):
        self.k = k
        self.on_invalid = on_invalid
        self.neighbours_method = neighbours

    def fit(self, embeddings: np.ndarray, input_embeddings: np.ndarray | None = None) -> Smoothie:
        """``embeddings``: (N, m, d), or (N, n, m, d) with n sampled generations per sample."""
        if self.k is not None and (not isinstance(self.k, (int, np.integer)) or self.k < 1):
            raise ValueError(f"k must be a positive integer or None, got {self.k!r}")
        if self.on_invalid not in ON_INVALID:
            raise ValueError(f"on_invalid must be one of {ON_INVALID}")
        if self.neighbours_method not in NEIGHBOUR_METHODS:
            raise ValueError(f"neighbours must be one of {NEIGHBOUR_METHODS}, not {self.neighbours_method!r}")
        x = _as_rows(embeddings)
        self.n_samples_, self.n_sets_, self.n_generators_, self.dim_ = x.shape
        # Per-sample mean over its n sampled sets; pooling equal-size sets keeps means exact.
        self.row_sums_ = row_distance_sums(x).mean(axis=1)
        if self.k is None:
            self.theta_ = weights_from_deltas(
                deltas_from_row_sums(self.row_sums_.mean(axis=0)), self.dim_, self.on_invalid
            )[0]
        else:
            self.k_ = min(int(self.k), self.n_samples_)
            self.input_embeddings_ = self.neighbours_index_ = None
            if input_embeddings is None:
                if self.k_ != 1:
                    raise ValueError(f"Smoothie-Local with k={self.k} needs input_embeddings to find neighbours")
            else:
                inputs = np.asarray(input_embeddings)  # a memmap stays on disk
                if len(inputs) != self.n_samples_:
                    raise ValueError(f"{len(inputs)} input embeddings for {self.n_samples_} samples")
                self.input_embeddings_ = inputs
                self.neighbours_index_ = NeighbourIndex(self.k_, self.neighbours_method).fit(inputs)
        return self

    def neighbours(self, query_inputs: np.ndarray | None = None) -> np.ndarray:
        """Indices of each query's k nearest fitted samples; None queries the fitted samples
        themselves, each of which is then always among its own neighbours (k=1: itself alone)."""
        if query_inputs is None:
            if self.k_ > 1 and self.n_sets_ > 1:
                raise ValueError(
                    f"with {self.n_sets_} sampled generations per sample, Smoothie-Local estimates each sample's "
                    f"errors from its own generations (SPEC 4): k must be 1, not {self.k}"
                )
            n = self.n_samples_
            own = np.arange(n)
            if self.k_ == 1:
                return own[:, None]
            idx = self.neighbours_index_.kneighbors(self.input_embeddings_)
            lacks_self = ~(idx == own[:, None]).any(axis=1)
            idx[lacks_self, -1] = own[lacks_self]  # exact duplicates can crowd a sample out
            return idx
        if self.neighbours_index_ is None:
            raise ValueError("fit was given no input embeddings, so new queries cannot be placed among its samples")
        return self.neighbours_index_.kneighbors(query_inputs)

    def predict_weights(self, query_inputs: np.ndarray | None = None, n_queries: int | None = None) -> np.ndarray:
        """(Q, m) weights. Global: theta_ for each of ``n_queries`` (default: the fitted samples).
        Local: pooled over each query's neighbours; ``query_inputs=None`` means the fitted samples."""
        if self.k is None:
            q = n_queries if n_queries is not None else (
                len(query_inputs) if query_inputs is not None else self.n_samples_)
            return np.tile(self.theta_, (q, 1))
        nbrs = self.neighbours(query_inputs)
        pooled = neighbour_matrix(nbrs, self.n_samples_) @ self.row_sums_
        return weights_from_deltas(deltas_from_row_sums(pooled), self.dim_, self.on_invalid)

    def predict(self, query_inputs: np.ndarray | None = None, n_queries: int | None = None) -> np.ndarray:
        """The selected generator index per query."""
        return stable_argmax(self.predict_weights(query_inputs, n_queries))


TIE_DECIMALS = 9


def stable_argmax(values: np.ndarray, decimals: int = TIE_DECIMALS) -> np.ndarray:
    """Argmax along the last axis where values equal to ``decimals`` places count as tied, and a
    tie goes to the lowest index.

    Why: identical outputs make exact ties (two generators that both answer "" and two that both
    answer "Belgium" are symmetric), and the last bits of the computed values then decide, which
    differ between CPUs' kernels (AVX-512 and AMX against AVX2). The demo's MBR row read 48.0 on
    one machine and 49.0 on another for that reason alone. Rounding first makes the pick a
    property of the data, not of the machine.
    """
    return np.round(np.asarray(values, dtype=np.float64), decimals).argmax(axis=-1)


def smoothie_weights(
    embeddings: np.ndarray | None,
    input_embeddings: np.ndarray | None = None,
    k: int | None = None,
    *,
    train_embeddings: np.ndarray | None = None,
    train_input_embeddings: np.ndarray | None = None,
    on_invalid: str = "parity",
    neighbours: str = "auto",
    n_queries: int | None = None,
) -> np.ndarray:
    """(N, m) Smoothie weights for N samples' m generations (rows sum to 1).

    ``k=None`` is Smoothie-Global, an int is Smoothie-Local over the k nearest samples by input
    embedding (the sample itself included; k=1 needs no input embeddings). With ``train_embeddings`` (and, for Local, train
    input embeddings) the errors are estimated on the train split and applied to these samples
    (the train_time regime); otherwise on these samples' own generations (test_time).
    ``embeddings`` may also be (N, n, m, d): n sampled generation sets per sample, and may be a
    memmap on disk. ``neighbours`` picks exact or approximate neighbour search (``src.neighbours``).
    In the train_time regime the test generations are never read: ``embeddings=None`` with
    ``n_queries`` (the test row count) spares embedding them.
    """
    if embeddings is None:
        if train_embeddings is None or n_queries is None:
            raise ValueError("embeddings=None needs train_embeddings and n_queries (the train_time regime)")
        model = Smoothie(k=k, on_invalid=on_invalid, neighbours=neighbours).fit(train_embeddings, train_input_embeddings)
        if k is None:
            return model.predict_weights(n_queries=n_queries)
        if input_embeddings is None:
            raise ValueError("Smoothie-Local in the train_time regime needs the test input embeddings")
        return model.predict_weights(input_embeddings)
    x = _as_rows(embeddings)
    if train_embeddings is None:
        model = Smoothie(k=k, on_invalid=on_invalid, neighbours=neighbours).fit(x, input_embeddings)
        return model.predict_weights(None)
    model = Smoothie(k=k, on_invalid=on_invalid, neighbours=neighbours).fit(train_embeddings, train_input_embeddings)
    if _as_rows(train_embeddings).shape[2:] != x.shape[2:]:
        raise ValueError("train and test embeddings must have the same number of generators and dimension")
    if k is None:
        return model.predict_weights(n_queries=len(x))
    if input_embeddings is None:
        raise ValueError("Smoothie-Local in the train_time regime needs the test input embeddings")
    return model.predict_weights(input_embeddings)
