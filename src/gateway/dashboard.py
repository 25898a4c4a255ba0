"""What ``/dashboard`` shows: the backends now, the router's view over time, the cost, and the
last 50 decisions. The page (``dashboard.html``, no build step) polls ``/dashboard/data``.

The core feeds it as it works (``decided`` with each log line, ``called`` with each backend
call); ``sample`` adds a point to the history every ``SAMPLE_SECONDS`` while requests come in,
so the trend exists whether or not anyone is watching. Everything is in memory and bounded: the
last ``HISTORY`` points, ``DECISIONS`` decisions and ``LATENCIES`` call latencies per backend.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import numpy as np

SAMPLE_SECONDS = 5.0
HISTORY = 720  # an hour at one point every 5 s
DECISIONS = 50
LATENCIES = 500
CALLS_WINDOW = 60.0  # seconds of calls and requests behind each calls-per-request point
PAGE = Path(__file__).with_name("dashboard.html")


class Dashboard:
    def __init__(self, names: list[str]):
        self.names = list(names)
        self.decisions: deque[dict] = deque(maxlen=DECISIONS)
        self.history: deque[dict] = deque(maxlen=HISTORY)
        self.latencies = {b: deque(maxlen=LATENCIES) for b in names}
        self.tokens = {b: {"prompt": 0, "completion": 0} for b in names}
        self.calls = 0  # backend calls made (answers, failures, explore fan-outs; not skipped backends)
        self.routed = 0  # routed requests answered or failed
        self._marks = (0, 0)  # calls, routed at the last sample
        self._counts: deque[tuple[float, int, int]] = deque()  # (when, calls, routed) of each sample's span
        self._sampled_at = 0.0

    # -- fed by the core ---------------------------------------------------------------------------
    def called(self, name: str, outcome: str, ms: float | None, usage: dict | None) -> None:
        if outcome == "skipped":
            return
        self.calls += 1
        if ms is not None:
            self.latencies.setdefault(name, deque(maxlen=LATENCIES)).append(ms)
        tokens = self.tokens.setdefault(name, {"prompt": 0, "completion": 0})  # a judge URL's too
        for kind in ("prompt", "completion"):
            tokens[kind] += int((usage or {}).get(f"{kind}_tokens") or 0)

    def decided(self, line: dict, smoothie: dict) -> None:
        """A completion response's log line (as the log says it), with the reasons it lacks.
        Other paths (a 404 for /favicon.ico, a refused /health) are no decisions."""
        if not line["path"].endswith("completions"):
            return
        if line["policy"] not in ("direct", "rejected", "error"):
            self.routed += 1
        self.decisions.append({**line, "at": time.time(), "passed_over": smoothie.get("passed_over") or {},
                               "weights": smoothie.get("weights"), "degraded": smoothie.get("degraded")})

    def due(self) -> bool:
        return (time.monotonic() - self._sampled_at >= SAMPLE_SECONDS
                and (not self.history or (self.calls, self.routed) != self._marks))

    def point(self, ranking: dict, extra: dict | None = None) -> dict:
        """The router's view now: Global weights and agreement (``ranking``, as /health reports
        it), backend calls per routed request over the last ``CALLS_WINDOW`` seconds (a fan-out's
        calls end before its request does, an explore fan-out's after: a shorter span would
        count them against the wrong requests), tokens so far."""
        now = time.monotonic()
        recent = [(c, r) for t, c, r in self._counts if now - t <= CALLS_WINDOW]
        calls = sum(c for c, _ in recent) + self.calls - self._marks[0]
        routed = sum(r for _, r in recent) + self.routed - self._marks[1]
        return {"at": time.time(), "weights": ranking.get("weights") or {}, "agreement": ranking.get("agreement"),
                "calls_per_request": round(calls / routed, 3) if routed else None, "requests": routed,
                "tokens": {b: sum(t.values()) for b, t in self.tokens.items()}, **(extra or {})}

    def sample(self, ranking: dict, extra: dict | None = None) -> None:
        """Keep ``point`` in the history; the next one counts from here."""
        self.history.append(self.point(ranking, extra))
        now = time.monotonic()
        self._counts.append((now, self.calls - self._marks[0], self.routed - self._marks[1]))
        while self._counts and now - self._counts[0][0] > CALLS_WINDOW:
            self._counts.popleft()
        self._marks, self._sampled_at = (self.calls, self.routed), now

    # -- read by the page ------------------------------------------------------------------------
    def latency(self, name: str) -> dict:
        recent = np.asarray(self.latencies.get(name, ()), dtype=float)
        if not recent.size:
            return {"p50_ms": None, "p99_ms": None, "calls": 0}
        return {"p50_ms": round(float(np.percentile(recent, 50)), 1),
                "p99_ms": round(float(np.percentile(recent, 99)), 1), "calls": int(recent.size)}

    def data(self, backends: list[dict], now: dict, header: dict) -> dict:
        """The page's JSON: ``backends`` (state, in flight, limits) joined with latency and tokens,
        the history with ``now`` as its last point, the decisions newest first."""
        rows = [{**b, **self.latency(b["name"]), "tokens": self.tokens.get(b["name"], {"prompt": 0, "completion": 0})}
                for b in backends]
        return {**header, "backends": rows, "history": [*self.history, now],
                "decisions": list(reversed(self.decisions)), "sample_seconds": SAMPLE_SECONDS}

    def decision(self, rid: str) -> dict | None:
        return next((d for d in self.decisions if d["id"] == rid), None)
