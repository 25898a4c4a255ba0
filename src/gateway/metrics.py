"""The gateway's Prometheus metrics, in a registry of its own (several apps in one process, as in
the tests, do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("smoothie_requests", "Requests by policy and HTTP status", ["policy", "status"],
                                registry=r)
        self.backend_calls = Counter("smoothie_backend_calls", "Backend calls by backend and outcome",
                                     ["backend", "outcome"], registry=r)
        self.chosen = Counter("smoothie_chosen", "Answers returned, by the backend that gave them", ["backend"],
                              registry=r)
        self.latency = Histogram("smoothie_request_latency_seconds", "Gateway request latency", ["policy"],
                                 buckets=_BUCKETS, registry=r)
        self.backend_latency = Histogram("smoothie_backend_latency_seconds", "Backend call latency", ["backend"],
                                         buckets=_BUCKETS, registry=r)
        self.weight = Gauge("smoothie_global_weight", "Current Smoothie-Global weight over the stored window",
                            ["backend"], registry=r)
        self.stored = Gauge("smoothie_store_rows", "Fan-outs held in the store", registry=r)
