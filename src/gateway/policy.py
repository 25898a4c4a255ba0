"""The gateway's routing decisions, shared by the server (``src.serve``) and ``src.replay``.

Every request goes through two steps:

1. ``decide``: fan out to every backend, or call one (``select``: the best Smoothie-Global
   weight over the last ``window`` stored fan-outs; ``local``: Smoothie-Local over the ``k``
   stored fan-outs whose inputs are nearest). Until ``warmup`` fan-outs are stored, and for a
   fraction ``explore`` of requests, select and local fan out instead. The explore draw is keyed
   by (seed, the request's sequence number), so a replay and a restarted server draw the same.
2. ``choose`` (fan-outs only): Smoothie-Local over this request and its ``k`` nearest stored
   fan-outs; while fewer than ``k`` are stored, Smoothie-Global over all of them plus this one.

Backends are ranked by their estimated error delta, smallest first, and weights use the
estimator's "argmin" rule (``src.smoothie``): where every delta is positive this is the paper's
ranking exactly (theta = d / (2 delta)); where sampling noise makes a delta negative, the paper's
"parity" normalisation flips the signs of the others' weights, which would put the worst backend
second in the fallback order.

Why pairwise distances are kept per row: with the m x m squared distances between a row's
answers, the estimator's row sums for any subset of backends are sums of their entries, so a
request that some backends failed is routed among those that answered without re-reading any
vectors (see ``src.smoothie`` for the estimator itself).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from src.gateway.store import Fanout, FanoutStore
from src.smoothie import SmoothieWarning, deltas_from_row_sums, weights_from_deltas


@dataclass
class Decision:
    """What to do with one request: ``order`` lists the backends to ask (all at once for a
    fan-out; one after another, until one answers, otherwise)."""

    seq: int
    fanout: bool
    reason: str  # "fanout", "warmup", "explore", "select" or "local"
    order: list[str]
    weights: dict[str, float] | None


def pairwise_sq_distances(vecs: np.ndarray) -> np.ndarray:
    """(m, d) -> (m, m) squared Euclidean distances in float64, exactly 0 between equal answers."""
    v = np.asarray(vecs, dtype=np.float64)
    diff = v[:, None, :] - v[None, :, :]
    return np.einsum("ijd,ijd->ij", diff, diff)


@dataclass
class Estimate:
    """Smoothie's estimate over a pool of rows: each backend's error and weight."""

    deltas: np.ndarray
    weights: np.ndarray


def pooled(distances: np.ndarray, dim: int) -> Estimate:
    """Smoothie's estimate from the (P, m, m) pairwise distances of a pool of rows."""
    deltas = deltas_from_row_sums(distances.sum(axis=-1).mean(axis=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmoothieWarning)  # the rule is applied; a gateway has no one to warn
        return Estimate(deltas, weights_from_deltas(deltas, dim, on_invalid="argmin")[0])


def explore_draw(seed: int, seq: int) -> float:
    """A uniform number in [0, 1) that depends only on (seed, seq)."""
    return float(np.random.default_rng([seed, seq]).random())


class Router:
    """The routing state: the stored fan-outs' input embeddings and pairwise answer distances,
    mirrored in memory from a :class:`FanoutStore` and updated by :meth:`record`."""

    def __init__(self, backends: list[str], store: FanoutStore, *, policy: str = "fanout", k: int = 20,
                 explore: float = 0.1, warmup: int | None = None, window: int = 1000, seed: int = 0):
        self.backends, self.store, self.policy = list(backends), store, policy
        self.k, self.explore, self.window, self.seed = k, explore, window, seed
        self.warmup = k if warmup is None else warmup
        self._index = {b: i for i, b in enumerate(self.backends)}
        self.ids: list[str] = []
        self.inputs = np.zeros((0, 0), np.float32)  # (capacity, d); the first len(ids) rows are live
        self.dists = np.zeros((0, len(backends), len(backends)))  # NaN where a backend did not answer
        self.dim: int | None = None
        for row in store.rows():
            self._append(row)

    # -- state ---------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return len(self.ids)

    def _complete(self) -> np.ndarray:
        return ~np.isnan(self.dists[: self.n_rows]).any(axis=(1, 2))

    def n_complete(self) -> int:
        return int(self._complete().sum())

    def _append(self, row: Fanout) -> None:
        d = len(row.input_vec)
        if self.dim is None:
            self.dim = d
            self.inputs = np.zeros((64, d), np.float32)
            self.dists = np.full((64, len(self.backends), len(self.backends)), np.nan)
        n = self.n_rows
        if n == len(self.inputs):  # grow by doubling
            self.inputs = np.concatenate([self.inputs, np.zeros_like(self.inputs)])
            self.dists = np.concatenate([self.dists, np.full_like(self.dists, np.nan)])
        self.inputs[n] = row.input_vec
        dist = np.full((len(self.backends),) * 2, np.nan)
        have = [self._index[b] for b in self.backends if b in row.vecs]
        if have:
            dist[np.ix_(have, have)] = pairwise_sq_distances(np.stack([row.vecs[self.backends[i]] for i in have]))
        self.dists[n] = dist
        self.ids.append(row.request_id)

    def record(self, row: Fanout) -> None:
        """Store a fan-out and add it to the routing state (dropping what the store dropped)."""
        dropped = set(self.store.add(row))
        drop = 0
        while drop < self.n_rows and self.ids[drop] in dropped:
            drop += 1
        if drop:
            n = self.n_rows
            self.inputs[: n - drop] = self.inputs[drop:n].copy()
            self.dists[: n - drop] = self.dists[drop:n].copy()
            self.dists[n - drop : n] = np.nan
            del self.ids[:drop]
        self._append(row)

    # -- weights -------------------------------------------------------------------------------
    def _nearest(self, query: np.ndarray, k: int) -> np.ndarray:
        """Indices of the k complete stored rows nearest to ``query`` (ties: the older row)."""
        rows = np.flatnonzero(self._complete())
        x = self.inputs[rows].astype(np.float64)
        q = np.asarray(query, np.float64)
        dist = np.einsum("nd,nd->n", x, x) - 2.0 * (x @ q)
        return rows[np.argsort(dist, kind="stable")[:k]]

    def global_estimate(self) -> Estimate | None:
        """Smoothie-Global over the last ``window`` complete stored fan-outs (None if there are none)."""
        rows = np.flatnonzero(self._complete())[-self.window :]
        return pooled(self.dists[rows], self.dim) if len(rows) else None

    def local_estimate(self, query: np.ndarray) -> Estimate | None:
        """Smoothie-Local over the k complete stored fan-outs nearest to ``query``."""
        if self.n_complete() == 0:
            return None
        return pooled(self.dists[self._nearest(query, self.k)], self.dim)

    def global_weights(self) -> np.ndarray | None:
        est = self.global_estimate()
        return None if est is None else est.weights

    def local_weights(self, query: np.ndarray) -> np.ndarray | None:
        est = self.local_estimate(query)
        return None if est is None else est.weights

    def _named(self, est: Estimate | None, names: list[str] | None = None) -> dict[str, float] | None:
        return None if est is None else {b: float(w) for b, w in zip(names or self.backends, est.weights)}

    def ranked(self, est: Estimate | None, among: list[str] | None = None, names: list[str] | None = None
               ) -> list[str]:
        """``among`` by estimated error, best first (ties, and no estimate: configuration order);
        ``names`` are the backends ``est`` covers (default: all)."""
        among = self.backends if among is None else among
        if est is None:
            return list(among)
        where = {b: i for i, b in enumerate(names or self.backends)}
        return sorted(among, key=lambda b: (est.deltas[where[b]], self._index[b]))

    # -- the two steps -------------------------------------------------------------------------
    def decide(self, seq: int, input_vec: np.ndarray | None = None) -> Decision:
        """Fan out, or which backend to call (with the next-best ones to fall back on)."""
        if self.policy == "fanout":
            return Decision(seq, True, "fanout", list(self.backends), None)
        if self.n_complete() < max(self.warmup, 1):
            return Decision(seq, True, "warmup", list(self.backends), None)
        if explore_draw(self.seed, seq) < self.explore:
            return Decision(seq, True, "explore", list(self.backends), None)
        if self.policy == "select":
            est = self.global_estimate()
        else:
            if input_vec is None:
                raise ValueError("the local policy needs the request's input embedding")
            est = self.local_estimate(input_vec)
        return Decision(seq, False, self.policy, self.ranked(est), self._named(est))

    def choose(self, vecs: dict[str, np.ndarray], input_vec: np.ndarray | None, empty: frozenset[str] = frozenset()
               ) -> tuple[str, dict[str, float] | None]:
        """The chosen backend among those that answered a fan-out (``vecs``: backend -> its
        answer's embedding) and the weights it was chosen by. Backends in ``empty`` answered
        with no text: they count in the estimate (that is how it learns they are poor), but an
        empty answer is returned only when every answer is empty."""
        answered = [b for b in self.backends if b in vecs]  # configuration order
        if not answered:
            raise ValueError("no backend answered")

        def first_usable(ranking: list[str]) -> str:
            return next((b for b in ranking if b not in empty), ranking[0])

        if len(answered) < 3:  # too few for the triplet identity: the stored Global ranking decides
            est = self.global_estimate()
            return first_usable(self.ranked(est, answered)), self._named(est)
        cols = [self._index[b] for b in answered]
        own = pairwise_sq_distances(np.stack([vecs[b] for b in answered]))[None]
        complete = np.flatnonzero(self._complete())
        if input_vec is not None and len(complete) >= self.k:
            pool = self._nearest(input_vec, self.k)
        else:
            pool = complete
        stored = self.dists[pool][:, cols][:, :, cols]
        est = pooled(np.concatenate([own, stored]), len(next(iter(vecs.values()))))
        return first_usable(self.ranked(est, answered, answered)), self._named(est, answered)
