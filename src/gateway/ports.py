"""The interfaces the request core is written against, and nothing else: a store of fan-outs and
a set of backends. ``src.serve`` plugs in the SQLite or PostgreSQL store and the live HTTP pool;
``src.replay`` plugs in an in-memory SQLite store and backends that answer from files. One
conformance suite (``tests/test_gateway_stores.py``) runs against both stores.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from src.gateway.store import Fanout


@runtime_checkable
class Store(Protocol):
    """Where fan-outs are kept, keyed by request number, per embedder identity.

    ``shared`` says whether other processes write to it too (replicas): then the core polls it.
    ``threads``: how many of the core's store threads may call it at once (the core never calls
    it on the event loop). Failures the database causes raise ``store_errors()``.
    ``add`` stores a row under ``embedder`` (default: the store's, which changes when the embedding
    model does; a row embedded by the old model names the old one) and returns the request ids it evicted, so the caller's in-memory copy drops the same
    rows; ``next_sequence`` numbers requests, never reusing a number across restarts (or replicas);
    ``poll`` and ``new_verdicts`` return what other writers stored since the last call (nothing
    when the store has one writer), never this process's own."""

    shared: bool
    threads: int
    embedder: str

    def rows(self) -> list[Fanout]: ...

    def poll(self) -> tuple[list[Fanout], list[str]]: ...

    def add(self, row: Fanout, embedder: str | None = None) -> list[str]: ...

    def next_sequence(self) -> int: ...

    def add_score(self, seq: int, score: float) -> None: ...

    def scores(self) -> dict[int, float]: ...

    def add_verdicts(self, seq: int, verdicts: list[dict]) -> None: ...

    def verdicts(self) -> list[dict]: ...

    def new_verdicts(self) -> list[dict]: ...

    def add_pending(self, seq: int, request_id: str, job: dict) -> None: ...

    def drop_pending(self, seq: int) -> None: ...

    def pending(self) -> list[tuple[int, str, dict]]: ...

    def pending_count(self) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class Backends(Protocol):
    """The backends as the core calls them: ``call`` and ``stream`` raise
    ``src.gateway.backends.BackendError``; the rest report health and queues."""

    waiting: dict[str, int]
    tracing: object  # a src.gateway.tracing.Tracing, set by the core: queue-wait spans and traceparent

    async def call(self, name: str, kind: str, body: dict, background: bool = False,
                   deadline: float | None = None) -> tuple[dict, float]: ...

    def stream(self, name: str, kind: str, body: dict) -> AbstractAsyncContextManager: ...

    def cooling(self, name: str) -> str | None: ...

    def state(self, name: str) -> str: ...

    def retry_after(self, name: str) -> int: ...

    def in_flight(self, name: str) -> int: ...

    def redact(self, text: str) -> str: ...

    async def probe(self) -> dict[str, str]: ...

    async def aclose(self) -> None: ...
