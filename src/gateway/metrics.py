"""The gateway's Prometheus metrics, in a registry of its own (several apps in one process, as in
the tests, do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("smoothie_requests", "Responses by policy and HTTP status (a stream that broke "
                                "off counts as 502)", ["policy", "status"], registry=r)
        self.backend_calls = Counter("smoothie_backend_calls", "Backend calls by backend and outcome (ok, error: the "
                                     "backend's fault, rejected: the request's, empty, queued_out, skipped: cooling "
                                     "down, broken: a stream that broke off)", ["backend", "outcome"], registry=r)
        self.tokens = Counter("smoothie_backend_tokens", "Tokens the backends reported, by backend and kind",
                              ["backend", "kind"], registry=r)
        self.chosen = Counter("smoothie_chosen", "Answers returned, by the backend that gave them and whether the "
                              "request was routed or named the backend", ["backend", "route"], registry=r)
        self.latency = Histogram("smoothie_request_latency_seconds", "Gateway request latency", ["policy"],
                                 buckets=_BUCKETS, registry=r)
        self.backend_latency = Histogram("smoothie_backend_latency_seconds", "Backend call latency from dispatch",
                                         ["backend"], buckets=_BUCKETS, registry=r)
        self.queued = Gauge("smoothie_backend_queued", "Calls clients wait for, waiting for a free slot of the backend "
                            "(work after a response, which queues behind them, is not counted)", ["backend"],
                            registry=r)
        self.weight = Gauge("smoothie_global_weight", "Current Smoothie-Global weight over the stored window",
                            ["backend"], registry=r)
        self.agreement = Gauge("smoothie_global_agreement", "Share of bootstrap resamples of the stored window whose "
                               "Smoothie-Global best backend is the current one (near 1: settled)", registry=r)
        self.stored = Gauge("smoothie_store_rows", "Fan-outs held in the store", registry=r)
        self.embedding_failures = Counter("smoothie_embedding_failures", "Embedding server calls that failed after "
                                          "their retries (each request then got a 503)", registry=r)
        self.store_failures = Counter("smoothie_store_failures", "Store calls that failed or timed out (a database "
                                      "that is down, restarting or locked)", registry=r)
        self.contenders = Gauge("smoothie_contenders", "Backends the stored fan-outs cannot tell apart from Global's "
                                "best (--contenders), as the last single call saw them", registry=r)
        self.contender_share = Gauge("smoothie_contender_share", "Each contender's share of bootstrap resamples in "
                                     "which it is Global's best (0: not a contender), for the next request",
                                     ["backend"], registry=r)
        self.judge_calls = Counter("smoothie_judge_calls", "Judge calls (--judge) by judge and outcome (ok, failed); "
                                   "also counted in smoothie_backend_calls", ["judge", "outcome"], registry=r)
        self.verdicts = Counter("smoothie_judge_verdicts", "The judge's verdicts by outcome (A, B, C: a tie, X: none given)",
                                ["outcome"], registry=r)
        self.pending = Gauge("smoothie_pending_fanouts", "Explore fan-outs answered but not yet stored", registry=r)
