"""Nearest neighbours by input embedding, for Smoothie-Local: exact when that is cheap, approximate above.

Exact search costs N x N distance computations: 36 s at 50,000 rows on a 2-core CPU, about four
hours at 1,000,000. Above ``EXACT_MAX_ROWS`` the default switches to FAISS's HNSW graph, whose
build and search grow as N log N. HNSW was chosen over FAISS's inverted-file index because its
recall held on every data set tried: on 20,000 synthetic low-rank vectors IVF-Flat reached
recall@20 of 0.58 where HNSW reached 0.96 (both near 1 on real mpnet vectors). Recall and the
agreement of Smoothie-Local's picks with exact search are measured by ``benchmarks/bench_scale.py``
(docs/scale.md).

Exact search is scikit-learn's, as it always was here, so results below the threshold are what
they were before the approximate path existed. The approximate path is deterministic: HNSW's
levels come from FAISS's fixed seed, and the graph was identical across repeated builds here.

The data decide between two approximate indexes. HNSW is fast where points have neighbourhood
structure (sentence embeddings, topics) and slow where they have none: on 1,000,000 i.i.d.
Gaussian directions in 384 dimensions its build and search took 1,126 s, and no index finds
"nearest" neighbours there at much less than exact search's cost, because every point is about
as far from every other (distance concentration). So the index first measures the relative
contrast on a sample (the mean distance to other points over the distance to the k-th nearest):
above ``MIN_CONTRAST`` it builds HNSW; below, the inputs carry almost no neighbourhood
information, the cheap IVF index is used, and a warning says so (``--neighbours exact`` if the
neighbours must be exact anyway).
"""

from __future__ import annotations

import warnings

import numpy as np

METHODS = ("auto", "exact", "approx")
EXACT_MAX_ROWS = 50_000
HNSW_M = 16  # graph degree
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 128  # candidates kept per query: the recall knob
_CHUNK = 65_536  # rows copied to float32 at a time (the points may be a float16 memmap)
MIN_CONTRAST = 1.25  # below: no neighbourhood structure to speak of (i.i.d. 384-d directions measure ~1.1)
CONTRAST_SAMPLE, CONTRAST_QUERIES = 20_000, 500
IVF_PROBES = 8


class UnstructuredInputs(UserWarning):
    """The inputs have almost no neighbourhood structure: approximate neighbours are nearly arbitrary."""


def relative_contrast(points: np.ndarray, k: int, seed: int = 0) -> float:
    """Median over sampled queries of (mean distance to the sample) / (distance to the k-th nearest),
    on a seeded sample of the points: about 1 when all points are equally far apart."""
    rng = np.random.default_rng(seed)
    n = len(points)
    rows = np.sort(rng.choice(n, size=min(n, CONTRAST_SAMPLE), replace=False))
    sample = np.asarray(points[rows], dtype=np.float32)
    queries = sample[: min(CONTRAST_QUERIES, len(sample))]
    sq = (queries**2).sum(1)[:, None] + (sample**2).sum(1)[None, :] - 2.0 * queries @ sample.T
    dist = np.sqrt(np.maximum(sq, 0.0))
    kth = np.partition(dist, min(k, dist.shape[1] - 1), axis=1)[:, min(k, dist.shape[1] - 1)]  # column 0 is itself
    return float(np.median(dist.mean(axis=1) / np.maximum(kth, 1e-12)))


def _as_float32(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, dtype=np.float32)
    for s in range(0, len(x), _CHUNK):
        out[s : s + _CHUNK] = x[s : s + _CHUNK]
    return out


def resolve_method(method: str, n_points: int) -> str:
    """"auto" becomes "exact" up to ``EXACT_MAX_ROWS`` points, "approx" above."""
    if method not in METHODS:
        raise ValueError(f"neighbour method must be one of {METHODS}, not {method!r}")
    if method == "auto":
        return "exact" if n_points <= EXACT_MAX_ROWS else "approx"
    return method


class NeighbourIndex:
    """``kneighbors(queries)`` over fitted points, by Euclidean distance, exactly or approximately.

    ``method``: "exact" (scikit-learn), "approx" (FAISS HNSW) or "auto" (exact up to
    ``EXACT_MAX_ROWS`` points). ``ef_search`` trades speed for recall on the approximate path.
    """

    def __init__(self, k: int, method: str = "auto", ef_search: int = HNSW_EF_SEARCH):
        resolve_method(method, 0)
        self.k = k
        self.method = method
        self.ef_search = ef_search

    def fit(self, points: np.ndarray) -> NeighbourIndex:
        self.n_points_ = len(points)
        self.k_ = min(self.k, self.n_points_)
        self.method_ = resolve_method(self.method, self.n_points_)
        if self.method_ == "exact":
            from sklearn.neighbors import NearestNeighbors

            self.index_ = NearestNeighbors(n_neighbors=self.k_).fit(np.asarray(points))
        else:
            import faiss

            self.contrast_ = relative_contrast(points, self.k_)
            d = points.shape[1]
            if self.contrast_ >= MIN_CONTRAST:
                self.index_kind_ = "hnsw"
                self.index_ = faiss.IndexHNSWFlat(d, HNSW_M)
                self.index_.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            else:
                warnings.warn(
                    f"the {self.n_points_:,} inputs have almost no neighbourhood structure (relative contrast "
                    f"{self.contrast_:.2f}: every point is about as far from every other), so any neighbour search "
                    "short of exact is close to arbitrary; using the fast IVF index. Smoothie-Local's neighbours "
                    "mean little here: consider Smoothie-Global, or --neighbours exact", UnstructuredInputs,
                    stacklevel=3)
                self.index_kind_ = "ivf"
                nlist = max(1, min(int(4 * np.sqrt(self.n_points_)), self.n_points_ // 39))
                self.index_ = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
                rows = np.random.default_rng(0).choice(self.n_points_, size=min(self.n_points_, 64 * nlist),
                                                       replace=False)
                self.index_.train(_as_float32(points[np.sort(rows)]))
                self.index_.nprobe = IVF_PROBES
            for s in range(0, self.n_points_, _CHUNK):
                self.index_.add(_as_float32(points[s : s + _CHUNK]))
            if self.index_kind_ == "hnsw":
                self.index_.hnsw.efSearch = max(self.ef_search, self.k_)
        return self

    def kneighbors(self, queries: np.ndarray) -> np.ndarray:
        """(Q, k) indices of each query's nearest fitted points, nearest first."""
        if self.method_ == "exact":
            return self.index_.kneighbors(np.asarray(queries), return_distance=False)
        out = np.empty((len(queries), self.k_), dtype=np.int64)
        for s in range(0, len(queries), _CHUNK):
            out[s : s + _CHUNK] = self.index_.search(_as_float32(queries[s : s + _CHUNK]), self.k_)[1]
        if (out < 0).any():  # HNSW: cannot happen with efSearch >= k; IVF: probed lists held fewer than k
            if self.index_kind_ == "hnsw":
                raise RuntimeError("approximate neighbour search returned fewer than k neighbours")
            self._fill_short_rows(queries, out)
        return out

    def _fill_short_rows(self, queries: np.ndarray, out: np.ndarray) -> None:
        """IVF rows whose probed lists held fewer than k points: searched again over every list."""
        short = np.flatnonzero((out < 0).any(axis=1))
        nprobe = self.index_.nprobe
        self.index_.nprobe = self.index_.nlist
        try:
            out[short] = self.index_.search(_as_float32(np.asarray(queries)[short]), self.k_)[1]
        finally:
            self.index_.nprobe = nprobe


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row's exact neighbours that the approximate list also holds."""
    hits = [len(np.intersect1d(a, e, assume_unique=True)) for a, e in zip(approx, exact)]
    return float(np.mean(hits) / exact.shape[1])
