"""What the gateway says about itself: ``/v1/models``, ``/health``, ``/dashboard/data`` and the
gauges of ``/metrics``, each computed for the request the gateway would number next, so a
report shows what the next single call would follow, not an estimate over other rows.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from prometheus_client import generate_latest

from src.gateway.dashboard import SAMPLE_SECONDS
from src.gateway.judge import NO_VERDICT
from src.gateway.policy import CONTENDER_RESAMPLES


class Reports:
    """The core's reports (a mixin of ``Core``); all redacted (``clean``)."""

    async def _sample_view(self) -> None:
        """The dashboard's history: the router's view every few seconds while requests come in."""
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            if self.dashboard.due():
                _, ranking, contenders = self._view()
                self.dashboard.sample(ranking, {"contenders": contenders})

    def _view(self) -> tuple[int, dict, dict[str, float] | None]:
        """The next request's number, the Global ranking it would follow, and the contenders
        (``--contenders``; None when 0)."""
        with self._next_view() as seq:
            contenders = self.router.contenders(seq, self.settings.contenders) if self.settings.contenders else None
            return seq, self.router.global_ranking(seq), contenders

    def models(self) -> dict:
        names = [*self.settings.routed_names(), *self.names]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "smoothie"}
                                           for n in names]}

    def health(self) -> dict:
        states = {b: self.pool.state(b) for b in self.names}
        _, ranking, contenders = self._view()
        with self._next_view() as seq:
            degenerate, rule = self.router.degenerate(seq).to_json(), self._rule_report(seq)
        return self.clean({"status": "ok" if all(v == "ok" for v in states.values()) else "degraded",
                "policy": self.settings.policy, "store_rows": self.router.n_rows,
                "pending_fanouts": len(self._late), "backends": states,
                "next_seq": seq, "degenerate": degenerate, "fanout_rule": rule, "global_ranking": ranking,
                "contenders": self._contender_report(contenders),
                "embedder": {"identity": self.store.embedder, "changes": self.embedder_changes}})

    def _contender_report(self, shares: dict[str, float] | None) -> dict | None:
        """/health's ``contenders``: the set the next single call would share, and how."""
        if shares is None:
            return None
        uses = self.settings.policy in ("select", "adaptive")
        judged = None
        if self.judge is not None and shares:
            with self._next_view() as seq:
                among = self._judge_set(seq, shares)
                judged = {"among": among, **self.router.judged(seq, among, self.settings.judge_kind == "peers")
                          .to_json()}
        return {"shares": shares, "confidence": self.settings.contenders, "resamples": CONTENDER_RESAMPLES,
                "settled": len(shares) == 1, "judge": judged,
                "decided_by": "judge" if judged and (judged["separated"] or judged["overrules"]) else "agreement",
                "used": ("the single calls go to these backends: free capacity first, then drawn by share"
                         if uses and len(shares) > 1 else "the single calls go to the best backend" if uses
                         else f"reported only: the {self.settings.policy} policy fans out")}

    def _rule_report(self, seq: int | None = None) -> dict:
        rule = self.router.rule(seq)
        return {"setting": self.settings.fanout_rule, "estimator": rule.label, "measured": rule.why}

    def dashboard_data(self) -> dict:
        """``/dashboard/data``: the backends now, the router's view over time (now included),
        tokens, and the last decisions (redacted like every report)."""
        seq, ranking, contenders = self._view()
        pool = self.pool
        backends = [{"name": b, "state": pool.state(b), "in_flight": pool.in_flight(b), "queued": pool.waiting.get(b, 0),
                     "max_concurrency": self.settings.backend(b).max_concurrency} for b in self.names]
        header = {"policy": self.settings.policy, "next_seq": seq, "store_rows": self.router.n_rows,
                  "pending_fanouts": len(self._late), "embedder": self.store.embedder, "updated": time.time(),
                  "judge": None}
        if self.judge is not None:
            report = self._contender_report(contenders) or {}
            header["judge"] = {"verdicts": dict(Counter(v.outcome for _, v in self.router.verdicts
                                                        if v.outcome != NO_VERDICT)),
                               "no_verdict": sum(v.outcome == NO_VERDICT for _, v in self.router.verdicts),
                               "decided_by": report.get("decided_by", "agreement"),
                               "best": (report.get("judge") or {}).get("best")}
        return self.clean(self.dashboard.data(backends, self.dashboard.point(ranking, {"contenders": contenders}),
                                              header))

    def metrics_text(self) -> bytes:
        _, ranking, contenders = self._view()
        for b in self.names:
            self.metrics.contender_share.labels(b).set((contenders or {}).get(b, 0.0))
        for name, w in ranking["weights"].items():
            self.metrics.weight.labels(name).set(w)
        if ranking["agreement"] is not None:
            self.metrics.agreement.set(ranking["agreement"])
        self.metrics.stored.set(self.router.n_rows)
        for b in self.names:
            self.metrics.queued.labels(b).set(self.pool.waiting.get(b, 0))
        return generate_latest(self.metrics.registry)
