"""The gateway's routing decisions: pure functions of the stored fan-outs, the seed and a
request's sequence number (no I/O, no clock). The request core (``src.gateway.core``) asks them
for both ``src.serve`` and ``src.replay``.

Every routed request goes through two steps:

1. ``mode`` and ``rank``: fan out to every backend, or call one (``select``: the best
   Smoothie-Global estimate over the last ``window`` visible fan-outs; ``local``: Smoothie-Local
   over the ``k`` visible fan-outs whose inputs are nearest). Until ``warmup`` usable fan-outs are
   visible, and for a share ``explore`` of requests, select and local fan out instead. The
   explore draw is keyed by (seed, sequence number), so a replay and a restarted server draw the same.
2. ``choose`` (fan-outs only): Smoothie-Local over this request and its ``k`` nearest visible
   fan-outs; while fewer than ``k`` are visible, Smoothie-Global over all of them plus this one.

**Visibility.** Request number s sees the fan-outs of requests numbered below ``s - lag``, and the
explore fan-outs finished after their response ("late" ones) numbered below ``s - explore_lag``,
among those stored when it is decided: it never waits for another request's backends. The core
``pin``s each request when it is numbered, naming the requests below those bounds whose
fan-out was still running then (``unseen``); their rows stay out of its decision even if they
arrive while it is being decided, and rows stored after the pin never enter it. So a decision
is a function of (its pin, the seed, its number, its text): the pin is written in the request's
log line, and ``src.replay --server_log`` pins each request the same way to reproduce every
decision of a loaded server exactly. One after another (nothing running), the pin is empty and
a replay at concurrency 1 reproduces the server without its log.

**Partial rows.** A fan-out is stored with the backends that answered with text. A row with 3 or
more answers is usable: each pair of backends' expected squared distance is averaged over the
rows where both answered, and Smoothie's row sums are built from those pair means. So a backend
that is down from the start leaves the others' estimate intact; it is simply not covered.

**Degenerate backends.** Agreement is Smoothie's only evidence, so two kinds of backend would
fool it. One that repeats a fixed answer whatever it is asked (a broken deployment, a refusal
template) is left out of every estimate once it has done so on half of at least ten visible
fan-outs, and twice as often as the other backends repeat theirs (on a yes/no task every backend
repeats itself): it is never ranked above a backend that answers. Two backends that give the same
answers (the same model behind two URLs: the same text, or embeddings within 1e-3 squared
distance, on 80% of the visible fan-outs both answered) would count their agreement twice; the
estimate keeps the first and gives the other its error and weight. Both are reported in /health.

Backends are ranked by their estimated error delta, smallest first, and weights use the
estimator's "argmin" rule (``src.smoothie``): where every delta is positive this is the paper's
ranking exactly (theta = d / (2 delta)); where sampling noise makes a delta negative, the paper's
"parity" normalisation flips the signs of the others' weights, which would put the worst backend
second in the fallback order.
"""

from __future__ import annotations

import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from src.gateway.judge import Judged, Verdict, judge_contenders
from src.gateway.store import Fanout
from src.smoothie import SmoothieWarning, deltas_from_row_sums, weights_from_deltas

MIN_ANSWERS = 3  # the triplet identity needs three answers to a request
MIN_EVIDENCE = 10  # visible fan-outs a backend (or pair) answered before it is judged degenerate
CONSTANT_SHARE = 0.5  # one answer text on this share of a backend's answers: it repeats itself
DUPLICATE_SHARE = 0.8  # the same answer on this share of the rows both answered: duplicates
DUPLICATE_DIST = 1e-3  # squared embedding distance under which two answers count as the same
FANOUT_RULES = ("auto", "global", "local")
AUTO_MIN_ROWS = 100  # visible fan-outs before `auto` weighs Local against Global
AUTO_EVERY = 50  # `auto` looks again each time this many more fan-outs are visible
AUTO_EVAL = 300  # the most recent visible fan-outs it scores the candidates on
AUTO_KS = (50, 100)  # Local's candidate neighbourhoods, besides --k
AUTO_Z = 3.0  # Local must beat Global by this many standard errors ...
AUTO_GAIN = 1 / 3  # ... and cut Global's estimated error by this share
BOOTSTRAP = 16  # resamples behind the adaptive policy's uncertainty
CONTENDER_RESAMPLES = 64  # resamples behind the contenders' shares
RANDOM_SHARE = 0.5  # of the adaptive fan-out chance, the same for every request (as select explores)
LOCAL_SHARE = 0.3  # the input's own neighbourhood's part in the adaptive uncertainty (Global's: the rest)
ADAPTIVE_HISTORY = 200  # recent uncertainties the adaptive policy compares a request's with
ADAPTIVE_PAYBACK = 50  # requests over which the adaptive policy pays back an over- or underspend


def text_hash(text: str) -> int:
    """A deterministic answer fingerprint (never 0: 0 marks a backend that did not answer)."""
    return zlib.crc32(text.encode("utf-8")) + 1


@dataclass
class Degenerate:
    """Backends whose agreement is no evidence: repeaters (backend -> share of their answers
    that are their most common one) and groups of duplicates (first of each group kept)."""

    constant: dict[str, float] = field(default_factory=dict)
    duplicates: list[list[str]] = field(default_factory=list)

    def left_out(self, present=None) -> set[str]:
        """The backends to leave out of an estimate over ``present`` (default: all): the
        repeaters, and each duplicate group but its first member present. A duplicate whose twin
        gave no answer this time is the group's only voice, so it is kept."""
        out = set(self.constant)
        for group in self.duplicates:
            members = [b for b in group if present is None or b in present]
            out |= set(members[1:])
        return out

    def to_json(self) -> dict:
        return {"constant": {b: round(v, 3) for b, v in self.constant.items()}, "duplicates": self.duplicates}


def pairwise_sq_distances(vecs: np.ndarray) -> np.ndarray:
    """(m, d) -> (m, m) squared Euclidean distances in float64, exactly 0 between equal answers."""
    v = np.asarray(vecs, dtype=np.float64)
    diff = v[:, None, :] - v[None, :, :]
    return np.einsum("ijd,ijd->ij", diff, diff)


@dataclass
class Estimate:
    """Smoothie's estimate over a pool of rows for the backends it covers (``names``)."""

    names: list[str]
    deltas: np.ndarray
    weights: np.ndarray

    def named_weights(self) -> dict[str, float]:
        return {b: float(w) for b, w in zip(self.names, self.weights)}


def pooled(distances: np.ndarray, dim: int, names: list[str]) -> Estimate | None:
    """Smoothie's estimate from the (P, m, m) pairwise distances of a pool of rows (NaN where a
    backend did not answer). Each pair's mean is taken over the rows where both answered;
    backends are left out, most-missing first, until every remaining pair has data. None when
    fewer than three backends remain."""
    m = len(names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN pair is handled below
        means = np.nanmean(distances, axis=0) if len(distances) else np.full((m, m), np.nan)
    np.fill_diagonal(means, 0.0)
    keep = list(range(m))
    while len(keep) >= MIN_ANSWERS:
        sub = means[np.ix_(keep, keep)]
        missing = np.isnan(sub).sum(axis=1)
        if not missing.any():
            break
        del keep[int(np.flatnonzero(missing == missing.max())[-1])]
    if len(keep) < MIN_ANSWERS:
        return None
    deltas = deltas_from_row_sums(means[np.ix_(keep, keep)].sum(axis=-1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmoothieWarning)  # the rule is applied; a gateway has no one to warn
        weights = weights_from_deltas(deltas, dim, on_invalid="argmin")[0]
    return Estimate([names[i] for i in keep], deltas, weights)


def row_deltas(dist: np.ndarray) -> np.ndarray:
    """Each backend's error on one fan-out from that fan-out alone (the triplet estimate over
    its pairs; NaN where a backend did not answer or fewer than three did). Noisy, but it
    uses no other row: the yardstick ``auto`` scores the other rows' estimates with."""
    out = np.full(len(dist), np.nan)
    have = np.flatnonzero(~np.isnan(dist).all(axis=1))
    if len(have) >= MIN_ANSWERS:
        out[have] = deltas_from_row_sums(dist[np.ix_(have, have)].sum(axis=-1))
    return out


@dataclass
class Rule:
    """The estimator a fan-out's answer is chosen by: Global over the window, or Local over
    ``k`` neighbours; ``why`` says what ``auto`` measured (None when the flag fixed it)."""

    kind: str
    k: int | None = None
    why: dict | None = None

    @property
    def label(self) -> str:
        return "global" if self.kind == "global" else f"local k={self.k}"


def spread_draw(seed: int, seq: int, among: list[str], shares: dict[str, float]) -> str:
    """One of ``among``, drawn in proportion to ``shares`` (evenly where they are all 0), keyed
    by (seed, seq) alone, so that a replay told ``among`` draws the same."""
    p = np.array([shares.get(b, 0.0) for b in among], dtype=float)
    p = p / p.sum() if p.sum() > 0 else np.full(len(among), 1 / len(among))
    return among[int(np.random.default_rng([seed, seq, 6]).choice(len(among), p=p))]


def explore_draw(seed: int, seq: int) -> float:
    """A uniform number in [0, 1) that depends only on (seed, seq)."""
    return float(np.random.default_rng([seed, seq]).random())


class Router:
    """The routing state: the stored fan-outs' sequence numbers, input embeddings and pairwise
    answer distances, in memory. The core adds rows as they are stored and drops the ones the
    store evicted."""

    def __init__(self, backends: list[str], *, policy: str = "fanout", k: int = 20, explore: float = 0.1,
                 warmup: int = 20, window: int = 1000, seed: int = 0, lag: int = 0, explore_lag: int = 0,
                 fanout_rule: str = "auto", budget: float | None = None):
        if fanout_rule not in FANOUT_RULES:
            raise ValueError(f"fanout_rule must be one of {FANOUT_RULES}, not {fanout_rule!r}")
        self.backends, self.policy, self.fanout_rule, self.budget = list(backends), policy, fanout_rule, budget
        self.k, self.explore, self.warmup, self.window, self.seed, self.lag = k, explore, warmup, window, seed, lag
        self.explore_lag = explore_lag
        self._index = {b: i for i, b in enumerate(self.backends)}
        self.ids: list[str] = []
        self.seqs = np.zeros(0, np.int64)
        self.inputs = np.zeros((0, 0), np.float32)  # (capacity, d); the first len(ids) rows are live
        self.dists = np.zeros((0, len(backends), len(backends)))  # NaN where a backend did not answer
        self.n_answers = np.zeros(0, np.int64)
        self.late = np.zeros(0, bool)
        self.hashes = np.zeros((0, len(backends)), np.int64)  # answer fingerprints, 0: no answer
        self.own = np.zeros((0, len(backends)))  # each row's errors from that row alone (row_deltas)
        self.added = np.zeros(0, np.int64)  # when each row entered this copy (a count of adds)
        self._adds = 0
        self._pins: dict[int, tuple[int, frozenset[int]]] = {}  # request -> (adds then, its unseen requests)
        self._degenerate: tuple[tuple, Degenerate] | None = None
        self._rule: tuple[tuple, Rule] | None = None
        self._spread: tuple[tuple, float, str | None] | None = None
        self._ranking: tuple[tuple | None, dict] | None = None
        self._contenders: tuple[tuple, dict[str, float]] | None = None
        self.verdicts: list[tuple[int, Verdict]] = []  # (when added, a judge's verdict), oldest first
        self._vadds = 0
        self._vpins: dict[int, int] = {}  # request -> verdicts added before it was pinned
        self._judged: tuple[tuple, Judged] | None = None
        self.uncertainty: dict[int, float] = {}  # adaptive: request number -> the score it was decided by
        self._in_order = True  # rows added by increasing request number (late fan-outs may break it)
        self.dim: int | None = None

    # -- state ---------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return len(self.ids)

    def add(self, row: Fanout) -> None:
        d = len(row.input_vec)
        if self.dim is None:
            self.dim = d
            self.inputs = np.zeros((64, d), np.float32)
            self.dists = np.full((64, len(self.backends), len(self.backends)), np.nan)
            self.seqs = np.zeros(64, np.int64)
            self.n_answers = np.zeros(64, np.int64)
            self.late = np.zeros(64, bool)
            self.hashes = np.zeros((64, len(self.backends)), np.int64)
            self.own = np.full((64, len(self.backends)), np.nan)
            self.added = np.zeros(64, np.int64)
        n = self.n_rows
        if n == len(self.inputs):  # grow by doubling
            self.inputs = np.concatenate([self.inputs, np.zeros_like(self.inputs)])
            self.dists = np.concatenate([self.dists, np.full_like(self.dists, np.nan)])
            self.seqs = np.concatenate([self.seqs, np.zeros_like(self.seqs)])
            self.n_answers = np.concatenate([self.n_answers, np.zeros_like(self.n_answers)])
            self.late = np.concatenate([self.late, np.zeros_like(self.late)])
            self.hashes = np.concatenate([self.hashes, np.zeros_like(self.hashes)])
            self.own = np.concatenate([self.own, np.full_like(self.own, np.nan)])
            self.added = np.concatenate([self.added, np.zeros_like(self.added)])
        self._in_order = self._in_order and (n == 0 or row.seq > self.seqs[n - 1])
        self.inputs[n] = row.input_vec
        dist = np.full((len(self.backends),) * 2, np.nan)
        have = [self._index[b] for b in self.backends if b in row.vecs]
        if have:
            dist[np.ix_(have, have)] = pairwise_sq_distances(np.stack([row.vecs[self.backends[i]] for i in have]))
        self.dists[n], self.seqs[n], self.n_answers[n], self.late[n] = dist, row.seq, len(have), row.late
        self.own[n] = row_deltas(dist)
        self.hashes[n] = [text_hash(row.answers[b]) if b in row.vecs and b in row.answers else 0
                          for b in self.backends]
        self.added[n] = self._adds
        self._adds += 1
        self.ids.append(row.request_id)
        self._degenerate = None

    def drop(self, request_ids) -> None:
        """Forget the rows the store evicted."""
        gone = set(request_ids)
        if not gone:
            return
        n = self.n_rows
        keep = np.array([rid not in gone for rid in self.ids], bool)
        m = int(keep.sum())
        for name in ("inputs", "dists", "seqs", "n_answers", "late", "hashes", "own", "added"):
            arr = getattr(self, name)
            arr[:m] = arr[:n][keep].copy()
        self.dists[m:n] = np.nan
        self.ids = [rid for rid, k in zip(self.ids, keep) if k]
        if m:  # verdicts older than every row kept go too, as in the store
            self.verdicts = [(a, v) for a, v in self.verdicts if v.seq >= int(self.seqs[:m].min())]
        self._degenerate = self._rule = self._spread = self._ranking = None

    # -- what a request sees -----------------------------------------------------------------------
    def pin(self, seq: int, unseen=()) -> None:
        """Fix what request ``seq`` is decided by: the rows stored now, less those of the
        requests ``unseen`` (still running when it was numbered). Until :meth:`unpin`."""
        self._pins[seq] = (self._adds, frozenset(int(q) for q in unseen))
        self._vpins[seq] = self._vadds

    def is_pinned(self, seq: int) -> bool:
        return seq in self._pins

    def unpin(self, seq: int) -> None:
        self._pins.pop(seq, None)
        self._vpins.pop(seq, None)

    def unseen(self, seq: int) -> list[int]:
        return sorted(self._pins[seq][1]) if seq in self._pins else []

    def _seen(self, seq: int | None) -> np.ndarray:
        """Which of the rows (usable or not) request ``seq`` sees (None: all)."""
        n = self.n_rows
        if seq is None:
            return np.ones(n, bool)
        ok = self.seqs[:n] < seq - np.where(self.late[:n], self.explore_lag, self.lag)
        if seq in self._pins:
            adds, unseen = self._pins[seq]
            ok &= self.added[:n] < adds
            if unseen:
                ok &= ~np.isin(self.seqs[:n], list(unseen))
        return ok

    def visible(self, seq: int | None) -> np.ndarray:
        """Indices of the usable rows request ``seq`` sees, oldest request first (None: all)."""
        n = self.n_rows
        rows = np.flatnonzero((self.n_answers[:n] >= MIN_ANSWERS) & self._seen(seq))
        return rows if self._in_order else rows[np.argsort(self.seqs[rows], kind="stable")]

    def _key(self, rows: np.ndarray) -> tuple:
        """A cache key for a set of rows (the same rows give the same key until a drop)."""
        return (len(rows), zlib.crc32(np.ascontiguousarray(rows).tobytes()))

    def n_usable(self, seq: int | None = None) -> int:
        return len(self.visible(seq))

    # -- estimates -----------------------------------------------------------------------------
    def _nearest(self, rows: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
        """The k of ``rows`` whose inputs are nearest to ``query`` (ties: the older request)."""
        x = self.inputs[rows].astype(np.float64)
        q = np.asarray(query, np.float64)
        dist = np.einsum("nd,nd->n", x, x) - 2.0 * (x @ q)
        return rows[np.argsort(dist, kind="stable")[:k]]

    def degenerate(self, seq: int | None = None) -> Degenerate:
        """Repeaters and duplicates among the last ``window`` fan-outs request ``seq`` sees."""
        rows = self.visible(seq)[-self.window :]
        key = self._key(rows)
        if self._degenerate is not None and self._degenerate[0] == key:
            return self._degenerate[1]
        found = Degenerate()
        h = self.hashes[rows]
        top = {}  # backend -> the share of its answers that are its most common one
        for j, b in enumerate(self.backends):
            answered = h[:, j][h[:, j] != 0]
            if len(answered) >= MIN_EVIDENCE:
                top[b] = np.unique(answered, return_counts=True)[1].max() / len(answered)
        for b, share in top.items():
            others = [v for o, v in top.items() if o != b]
            # a task whose answers are few (yes / no) makes every backend repeat: only the odd one out is flagged
            if share >= CONSTANT_SHARE and others and share >= 2 * float(np.median(others)):
                found.constant[b] = float(share)
        groups: dict[int, list[str]] = {}
        for i, a in enumerate(self.backends):
            if a in found.constant or any(a in g for g in groups.values()):
                continue
            for j in range(i + 1, len(self.backends)):
                b = self.backends[j]
                both = (h[:, i] != 0) & (h[:, j] != 0)
                if b in found.constant or both.sum() < MIN_EVIDENCE:
                    continue
                same = (h[both, i] == h[both, j]) | (self.dists[rows[both], i, j] <= DUPLICATE_DIST)
                if same.mean() >= DUPLICATE_SHARE:
                    groups.setdefault(i, [a]).append(b)
        found.duplicates = list(groups.values())
        self._degenerate = (key, found)
        return found

    def _estimate(self, distances: np.ndarray, dim: int, names: list[str], seq: int | None) -> Estimate | None:
        """``pooled`` without the degenerate backends (unless fewer than three would remain);
        a duplicate gets its group's first member's error and weight."""
        deg = self.degenerate(seq)
        answered = ~np.isnan(np.diagonal(distances, axis1=1, axis2=2)).all(axis=0) if len(distances) else []
        left_out = deg.left_out(present={b for b, a in zip(names, answered) if a})
        keep = [i for i, b in enumerate(names) if b not in left_out]
        if len(keep) < MIN_ANSWERS:
            keep = [i for i, b in enumerate(names) if b not in deg.constant]
            if len(keep) < MIN_ANSWERS:
                keep = list(range(len(names)))
        est = pooled(distances[:, keep][:, :, keep], dim, [names[i] for i in keep])
        if est is None:
            return None
        for group in deg.duplicates:
            kept = next((b for b in group if b in est.names), None)
            if kept is not None:
                at = est.names.index(kept)
                for other in (b for b in group[1:] if b in names and b not in est.names):
                    est.names.append(other)
                    est.deltas = np.append(est.deltas, est.deltas[at])
                    est.weights = np.append(est.weights, est.weights[at])
        return est

    def global_estimate(self, seq: int | None = None) -> Estimate | None:
        """Smoothie-Global over the last ``window`` usable fan-outs request ``seq`` sees."""
        rows = self.visible(seq)[-self.window :]
        return self._estimate(self.dists[rows], self.dim, self.backends, seq) if len(rows) else None

    def local_estimate(self, seq: int | None, query: np.ndarray, k: int | None = None) -> Estimate | None:
        """Smoothie-Local over the k usable fan-outs request ``seq`` sees whose inputs are nearest."""
        rows = self.visible(seq)
        if not len(rows):
            return None
        return self._estimate(self.dists[self._nearest(rows, query, k or self.k)], self.dim, self.backends, seq)

    def ranked(self, est: Estimate | None, among: list[str] | None = None) -> list[str]:
        """``among`` by estimated error, best first; backends the estimate does not cover come
        last (ties, and no estimate: configuration order)."""
        among = self.backends if among is None else among
        where = {b: i for i, b in enumerate(est.names)} if est is not None else {}
        return sorted(among, key=lambda b: (b not in where, est.deltas[where[b]] if b in where else 0.0,
                                            self._index[b]))

    # -- which estimator a fan-out's answer is chosen by ---------------------------------------------
    def rule(self, seq: int | None = None) -> Rule:
        """``--fanout_rule``: Global, Local over ``k``, or (auto) whichever the stored fan-outs
        favour. ``auto`` scores each candidate without labels by cross-fitting: on each recent
        fan-out, the candidate's pick is made from the other rows only, and charged that row's
        own error estimate for it (``row_deltas``), which is unbiased for the pick's distance to
        the unknown truth under Smoothie's model. Local replaces Global only when it is better by
        AUTO_Z standard errors and cuts the error by AUTO_GAIN: where the evidence is thin Global
        is safer, since on real sets a small estimated gain has not carried over to the labels
        (docs/serving.md). Looked at again every AUTO_EVERY visible fan-outs, on exactly those
        rows, so replays and restarts make the same choice."""
        if self.fanout_rule == "global":
            return Rule("global")
        if self.fanout_rule == "local":
            return Rule("local", self.k)
        rows = self.visible(seq)
        if len(rows) < AUTO_MIN_ROWS:
            return Rule("global", why={"reason": f"fewer than {AUTO_MIN_ROWS} fan-outs stored"})
        base = rows[: len(rows) - len(rows) % AUTO_EVERY][-self.window:]
        key = self._key(base)
        if self._rule is None or self._rule[0] != key:
            self._rule = (key, self._cross_fit(base, seq))
        return self._rule[1]

    def _cross_fit(self, base: np.ndarray, seq: int | None) -> Rule:
        left_out = self.degenerate(seq).left_out()
        cols = [i for i, b in enumerate(self.backends) if b not in left_out]
        if len(cols) < MIN_ANSWERS:
            cols = list(range(len(self.backends)))
        dists = self.dists[base][:, cols][:, :, cols]
        where = np.arange(len(base))[-AUTO_EVAL:]  # positions in base of the rows scored
        own = self.own[base[where]][:, cols]
        picks = {"global": self._global_picks(dists, where)}
        x = self.inputs[base].astype(np.float64)
        gaps = np.einsum("nd,nd->n", x, x)[None, :] - 2.0 * (x[where] @ x.T)
        gaps[np.arange(len(where)), where] = np.inf  # never a row's own fan-out
        nearest = np.argsort(gaps, axis=1, kind="stable")
        for k in sorted({self.k, *AUTO_KS}):
            if k <= len(base) // 2:
                picks[k] = np.array([self._pick(dists[nearest[i, :k]]) for i in range(len(where))])
        cost = {c: np.array([own[i, p] if p >= 0 else np.nan for i, p in enumerate(ps)]) for c, ps in picks.items()}
        g = cost["global"]
        why = {"rows": len(where), "error": {"global": float(np.nanmean(g))}, "z": {}}
        best, best_z = None, AUTO_Z
        for k, c in cost.items():
            if k == "global":
                continue
            d = (c - g)[~np.isnan(c - g)]
            z = float(-d.mean() / (d.std(ddof=1) / np.sqrt(len(d)) + 1e-12)) if len(d) > 2 else 0.0
            why["error"][f"local k={k}"], why["z"][f"local k={k}"] = float(np.nanmean(c)), round(z, 2)
            if z > best_z and -d.mean() >= AUTO_GAIN * np.nanmean(g):
                best, best_z = k, z
        why["error"] = {c: round(v, 5) for c, v in why["error"].items()}
        return Rule("global", why=why) if best is None else Rule("local", best, why)

    @staticmethod
    def _pick(dists: np.ndarray) -> int:
        est = pooled(dists, 1, list(range(dists.shape[1])))
        return -1 if est is None else est.names[int(np.argmin(est.deltas))]

    def _global_picks(self, dists: np.ndarray, where: np.ndarray) -> np.ndarray:
        """Global's pick for each row at ``where`` from all the other rows (leave one out)."""
        valid = ~np.isnan(dists)
        total, count = np.nansum(dists, axis=0), valid.sum(axis=0)
        mine = dists[where]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (total[None] - np.nan_to_num(mine)) / (count[None] - valid[where])
        m = dists.shape[1]
        means[:, np.arange(m), np.arange(m)] = 0.0
        picks = np.full(len(where), -1)
        whole = ~np.isnan(means).any(axis=(1, 2))
        if whole.any():
            picks[whole] = np.argmin(deltas_from_row_sums(means[whole].sum(axis=-1)), axis=1)
        for i in np.flatnonzero(~whole):  # a pair with no other data: pooled drops backends
            picks[i] = self._pick(np.delete(dists, where[i], axis=0))
        return picks

    # -- the adaptive policy -------------------------------------------------------------------
    def _global_spread(self, seq: int) -> tuple[float, str | None]:
        """How often Global's best backend changes when the visible window is resampled (0:
        settled; near 1: early, or after a drift), and that best backend."""
        rows = self.visible(seq)
        base = rows[: len(rows) - len(rows) % 10][-self.window:]
        if len(base) < MIN_ANSWERS:
            return 1.0, None
        key = self._key(base)
        if self._spread is None or self._spread[0] != key:
            self._spread = (key, *self._bootstrap_best(base, seq))
        return self._spread[1], self._spread[2]

    def _bootstrap_best(self, base: np.ndarray, seq: int | None) -> tuple[float, str]:
        """(the share of BOOTSTRAP resamples of the rows ``base`` whose Global best backend is
        not the one over ``base`` itself, that best backend). Keyed by the seed and the number of
        rows, so a replay draws the same resamples."""
        top = self.ranked(self._estimate(self.dists[base], self.dim, self.backends, seq))[0]
        rng = np.random.default_rng([self.seed, len(base), 2])
        tops = [self.ranked(self._estimate(self.dists[rng.choice(base, len(base))], self.dim, self.backends, seq))[0]
                for _ in range(BOOTSTRAP)]
        return float(np.mean([t != top for t in tops])), top

    def global_ranking(self, seq: int | None = None) -> dict:
        """What ``/health`` says of the Global ranking that select's single calls (and adaptive's,
        under the Global rule) follow: the backends best first with their weights, the fan-outs it
        rests on, and ``agreement``, the share of bootstrap resamples of those fan-outs whose best
        backend is the same. Well below 1, the best backend can still change as fan-outs arrive
        (docs/serving.md shows it change between 60 and 160 rows on real sets): explore more, or
        fan out, until it settles."""
        base = self.visible(seq)[-self.window:]
        key = self._key(base) if len(base) else None
        if self._ranking is not None and self._ranking[0] == key:  # tens of ms at a full window: once per change
            return self._ranking[1]
        est = self._estimate(self.dists[base], self.dim, self.backends, seq) if len(base) else None
        if est is None:
            report = {"order": self.ranked(None), "weights": {}, "fanouts": int(len(base)), "agreement": None,
                      "resamples": BOOTSTRAP}
        else:
            spread, _ = self._bootstrap_best(base, seq)
            report = {"order": self.ranked(est), "weights": {b: round(w, 4) for b, w in est.named_weights().items()},
                      "fanouts": int(len(base)), "agreement": round(1.0 - spread, 4), "resamples": BOOTSTRAP}
        self._ranking = (key, report)
        return report

    def contenders(self, seq: int | None, confidence: float) -> dict[str, float]:
        """The backends Smoothie-Global cannot tell apart from its best at ``confidence``, with
        their shares: over CONTENDER_RESAMPLES bootstrap resamples of the fan-outs request
        ``seq`` sees, the share in which each backend is Global's best. The set starts with the
        best over those fan-outs themselves (the backend select calls today) and adds the others,
        most often best first, until the set holds the best of ``confidence`` of the resamples.
        One backend: the data has settled. Empty before there is an estimate. Keyed by the seed
        and the rows, so a replay draws the same resamples; computed once per change of rows."""
        base = self.visible(seq)[-self.window:]
        if not len(base) or confidence <= 0:
            return {}
        key = (self._key(base), confidence)
        if self._contenders is not None and self._contenders[0] == key:
            return self._contenders[1]
        est = self._estimate(self.dists[base], self.dim, self.backends, seq)
        if est is None:
            return {}
        best = self.ranked(est)[0]
        rng = np.random.default_rng([self.seed, len(base), 5])
        tops = Counter(self.ranked(self._estimate(self.dists[rng.choice(base, len(base))], self.dim, self.backends,
                                                  seq))[0] for _ in range(CONTENDER_RESAMPLES))
        shares = {b: tops[b] / CONTENDER_RESAMPLES for b in self.backends}
        chosen = [best]
        for b in sorted(self.backends, key=lambda b: (-shares[b], self._index[b])):
            if sum(shares[c] for c in chosen) >= confidence - 1e-9:
                break
            if b not in chosen:
                chosen.append(b)
        result = {b: round(shares[b], 4) for b in chosen}
        self._contenders = (key, result)
        return result

    def add_verdicts(self, verdicts) -> None:
        for v in verdicts:
            self.verdicts.append((self._vadds, v))
            self._vadds += 1

    def seen_verdicts(self, seq: int | None) -> list[Verdict]:
        """The verdicts request ``seq`` sees: those on requests numbered below ``seq - lag``,
        added before it was pinned, less those of the requests it did not see (``unseen``: a
        fan-out or duel being judged when it was numbered)."""
        if seq is None:
            return [v for _, v in self.verdicts]
        limit = self._vpins.get(seq, self._vadds)
        unseen = self._pins[seq][1] if seq in self._pins else frozenset()
        return [v for added, v in self.verdicts if added < limit and v.seq < seq - self.lag and v.seq not in unseen]

    def judged(self, seq: int | None, names: list[str], peers: bool = False) -> Judged:
        """What the verdicts request ``seq`` sees say of ``names`` (Bradley–Terry with
        intervals, ``src.gateway.judge``), the first of ``names`` being agreement's choice."""
        seen = self.seen_verdicts(seq)
        key = (hash(tuple(seen)), len(seen), tuple(names), peers)
        if self._judged is not None and self._judged[0] == key:
            return self._judged[1]
        result = judge_contenders(names, seen, peers, anchor=names[0] if names else None)
        self._judged = (key, result)
        return result

    def last_agreement(self) -> float | None:
        """The Global ranking's agreement as last computed (by global_ranking), without computing
        it: a response header reads it, and a fresh bootstrap per request would cost tens of ms."""
        return self._ranking[1]["agreement"] if self._ranking is not None else None

    def _spent_since_warmup(self, seq: int, upto: int) -> tuple[int, int]:
        """(the first request number after the warm-up, the fan-outs stored from it up to
        ``upto``): the adaptive budget counts from there. The warm-up's fan-outs are a fixed
        cost, as in select, whose ``explore`` does not count them either; charging them to the
        budget left no fan-out at all for the next few hundred requests, exactly while the
        ranking was least settled. After an eviction the count starts at the oldest rows kept
        (the store forgets evenly, so the rate is unchanged)."""
        n = self.n_rows
        seen = self._seen(seq)
        seqs = self.seqs[:n][(self.n_answers[:n] >= MIN_ANSWERS) & seen]
        first = max(self.warmup, 1)
        if len(seqs) < first:
            return upto, 0
        since = int(np.partition(seqs, first - 1)[first - 1]) + self.lag + 1  # the warm-up's last usable row
        return since, int(((self.seqs[:n] >= since) & (self.seqs[:n] < upto) & seen).sum())

    def adapt(self, seq: int, input_vec: np.ndarray) -> tuple[bool, list[str], Estimate | None, dict]:
        """The adaptive policy's decision for request ``seq``: fan out or not, the order of
        backends to call otherwise (by the fan-out rule's estimator), its estimate, and the
        uncertainty that decided (reported in ``smoothie``).

        Uncertainty mixes two shares in [0, 1]: how often Global's best backend changes when the
        window is resampled (early on, after a drift), and how often this input's ``k`` nearest
        fan-outs, resampled, name another best backend than the one that would be called
        (LOCAL_SHARE of the score). The request fans out with a chance of share x (RANDOM_SHARE +
        (1 - RANDOM_SHARE) x score / the mean score of the last ADAPTIVE_HISTORY requests): the
        part that does not depend on the score keeps the stored rows a fair sample of the
        traffic (rows stored only for being hard bias the Global estimate later requests rank
        by). ``share`` is rho = (budget - 1) / (m - 1) plus what the requests seen so far
        after the warm-up (numbered below ``seq - lag``) overspent or underspent, paid back over ADAPTIVE_PAYBACK
        requests; a chance rather than a threshold, because the last ``lag`` requests' decisions
        are not yet seen, so a threshold would let a run of unsure requests all fan out. The
        draw is keyed by (seed, request number) and everything else read here
        is fixed by the request number, so replays predict it."""
        rule = self.rule(seq)
        rows = self.visible(seq)
        near = self._nearest(rows, input_vec, self.k) if len(rows) else rows
        est = self.local_estimate(seq, input_vec, rule.k) if rule.kind == "local" else self.global_estimate(seq)
        order = self.ranked(est)
        spread, _ = self._global_spread(seq)
        rng = np.random.default_rng([self.seed, seq, 3])
        tops = [self.ranked(self._estimate(self.dists[rng.choice(near, len(near))], self.dim, self.backends, seq))[0]
                for _ in range(BOOTSTRAP)] if len(near) else []
        local = float(np.mean([t != order[0] for t in tops])) if tops else 1.0
        score = (1 - LOCAL_SHARE) * spread + LOCAL_SHARE * local
        m = len(self.backends)
        rho = min(max((self.budget - 1) / (m - 1), 0.0), 1.0)
        upto = seq - self.lag
        since, spent = self._spent_since_warmup(seq, upto)
        share = min(max(rho + (rho * max(upto - since, 0) - spent) / ADAPTIVE_PAYBACK, 0.0), 1.0)
        unseen = self._pins[seq][1] if seq in self._pins else frozenset()
        past = [v for q, v in sorted(self.uncertainty.items()) if q < upto and q not in unseen][-ADAPTIVE_HISTORY:]
        usual = float(np.mean(past)) if len(past) >= 20 else score
        relative = score / usual if usual > 0 else 1.0
        chance = min(1.0, share * (RANDOM_SHARE + (1 - RANDOM_SHARE) * relative))
        self.uncertainty[seq] = score
        for q in [q for q in self.uncertainty if q < upto - 2 * ADAPTIVE_HISTORY]:
            del self.uncertainty[q]
        detail = {"global": round(spread, 3), "local": round(local, 3), "score": round(score, 4),
                  "relative": round(relative, 3), "fanout_share": round(share, 4), "fanout_chance": round(chance, 4)}
        return explore_draw(self.seed, seq) < chance, order, est, detail

    # -- the two steps -------------------------------------------------------------------------
    def mode(self, seq: int) -> str:
        """How request ``seq`` is served: "fanout", "warmup", "explore", or the policy's single
        call ("select", "local")."""
        if self.policy == "fanout":
            return "fanout"
        if self.n_usable(seq) < max(self.warmup, 1):
            return "warmup"
        if self.policy == "adaptive":
            return "adaptive"  # decided by adapt(), with the request's input embedding
        if explore_draw(self.seed, seq) < self.explore:
            return "explore"
        return self.policy

    def rank(self, seq: int, input_vec: np.ndarray | None = None) -> tuple[list[str], Estimate | None]:
        """The policy's order of backends for request ``seq`` (best first) and its estimate."""
        if self.policy == "local":
            if input_vec is None:
                raise ValueError("the local policy needs the request's input embedding")
            est = self.local_estimate(seq, input_vec)
        else:
            est = self.global_estimate(seq)
        return self.ranked(est), est

    def choose(self, seq: int, vecs: dict[str, np.ndarray], input_vec: np.ndarray | None
               ) -> tuple[str, Estimate | None]:
        """The chosen backend among those that answered a fan-out (``vecs``: backend -> its
        answer's embedding) and the estimate it was chosen by, over those that answered."""
        answered = [b for b in self.backends if b in vecs]  # configuration order
        if not answered:
            raise ValueError("no backend answered")
        if len(answered) < MIN_ANSWERS:  # too few for the triplet identity: the visible Global ranking decides
            est = self.global_estimate(seq)
            return self.ranked(est, answered)[0], est
        cols = [self._index[b] for b in answered]
        own = pairwise_sq_distances(np.stack([vecs[b] for b in answered]))[None]
        rows, rule = self.visible(seq), self.rule(seq)
        if rule.kind == "global":
            rows = rows[-self.window:]
        elif input_vec is not None and len(rows) >= rule.k:
            rows = self._nearest(rows, input_vec, rule.k)
        stored = self.dists[rows][:, cols][:, :, cols]
        est = self._estimate(np.concatenate([own, stored]), len(vecs[answered[0]]), answered, seq)
        return self.ranked(est, answered)[0], est
