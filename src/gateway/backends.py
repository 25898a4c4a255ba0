"""Calls to the backends: one shared async HTTP client, a per-backend concurrency limit with its
queue inside the gateway, a timeout counted from dispatch that bounds the whole call, and a
cool-down for a backend that keeps failing.

Who is at fault decides what a failure does (``BackendError.fault``):
- ``backend``: the backend failed (refused connection, timeout, 5xx, 401/403/404/408/429, a body
  that is not an OpenAI response). Counts toward its cool-down.
- ``request``: the backend rejected this request (any other 4xx: context too long, a word it
  refuses). Never counts toward cool-down; when every backend says so, the client gets that 4xx.
- ``empty``: a 200 whose answer has no text. A failed answer for this request, not a sick backend.
- ``queue``: no slot of the backend freed within ``max_queue_wait``. Not the backend's fault either.
- ``deadline``: the call outlived the caller's own bound (``deadline``, shorter than the pool's
  timeout: a judge call's ``--judge_timeout``). The caller gave up; the backend is not sick.

Nothing a client sends can change a backend's health. Error texts never contain an API key.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from src.gateway.config import Backend
from src.gateway.protocol import CHAT, answer_text, check_response, loads_bounded
from src.gateway.redact import Redactor
from src.gateway.tracing import Tracing

_PATHS = {CHAT: "/chat/completions", "completion": "/completions"}
# 4xx answers that say something about the backend (its key, its model id, its load), not the request
BACKEND_4XX = frozenset({401, 403, 404, 408, 429})


class BackendError(Exception):
    """A backend gave no usable answer to this request; ``fault`` says whose fault it was."""

    def __init__(self, message: str, fault: str = "backend", status: int | None = None):
        super().__init__(message)
        self.fault, self.status = fault, status


@dataclass
class _Health:
    failures: int = 0  # in a row
    cooling_until: float = 0.0
    unreachable: str | None = None  # why, while no call has succeeded since a probe or call failed to connect


OUTCOME = {"backend": "error", "request": "rejected", "empty": "empty", "queue": "queued_out",  # fault -> metric label
           "deadline": "deadline"}


class Slots:
    """A backend's ``max_concurrency`` slots, where a call made for a waiting client (foreground)
    always goes before work done after a response (background: the rest of an explore fan-out, a
    duel's second answer, a judge's call). Why: a one-slot backend (llama.cpp) that is also the
    judge would otherwise queue users' requests behind judge calls, and one request's late
    fan-out would hold another's answer. A background call already holding the slot finishes."""

    def __init__(self, limit: int):
        self.limit, self.busy = limit, 0
        self._waiters: dict[bool, deque[asyncio.Future]] = {False: deque(), True: deque()}  # background?

    async def acquire(self, background: bool = False) -> None:
        if self.busy < self.limit and not self._waiters[False] and (not background or not self._waiters[True]):
            self.busy += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[background].append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed the slot just as it stopped waiting
                self.release()
            elif waiter in self._waiters[background]:  # (a release may have dropped it already)
                self._waiters[background].remove(waiter)
            raise

    def release(self) -> None:
        """Hand the slot to the first foreground waiter, else the first background one."""
        for background in (False, True):
            queue = self._waiters[background]
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot passes on: ``busy`` stays
                    return
        self.busy -= 1


class BackendPool:
    """The backends as the core sees them: ``call`` and ``stream`` (both raise BackendError),
    health, and queue state. ``src.replay`` has its own class with the same methods."""

    def __init__(self, backends: list[Backend], *, timeout: float, max_failures: int, cooldown: float,
                 max_queue_wait: float, redact: Redactor | None = None):
        self.backends = {b.name: b for b in backends}
        self.timeout, self.max_failures, self.cooldown, self.max_queue_wait = (timeout, max_failures, cooldown,
                                                                               max_queue_wait)
        self.health = {b.name: _Health() for b in backends}
        self.slots = {b.name: Slots(b.max_concurrency) for b in backends}
        self.waiting = {b.name: 0 for b in backends}
        self.recent_ms = {b.name: 1000.0 for b in backends}  # a running mean, for Retry-After
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout),
                                        limits=httpx.Limits(max_connections=512, max_keepalive_connections=128))
        self.redact = redact or Redactor([b.api_key() for b in backends])
        self.tracing = Tracing()  # the core sets its own: queue-wait spans, traceparent on every call

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- health --------------------------------------------------------------------------------
    def cooling(self, name: str) -> str | None:
        """Why ``name`` is skipped now, or None if it may be called."""
        left = self.health[name].cooling_until - time.monotonic()
        if left > 0:
            return f"skipped: {self.health[name].failures} failures in a row, cooling down ({left:.0f} s left)"
        return None

    def state(self, name: str) -> str:
        """``ok``, ``cooling down (N s left)`` or ``unreachable: why``, for /health."""
        h = self.health[name]
        left = h.cooling_until - time.monotonic()
        if left > 0:
            return f"cooling down ({left:.0f} s left, {h.failures} failures in a row)"
        if h.unreachable:
            return f"unreachable: {h.unreachable}"
        return "ok"

    def _ok(self, name: str) -> None:
        self.health[name] = _Health()

    def _failed(self, name: str, exc: BaseException | None = None) -> None:
        h = self.health[name]
        h.failures += 1
        if isinstance(exc, httpx.ConnectError):
            h.unreachable = self._describe(exc)
        if h.failures >= self.max_failures:
            h.cooling_until = time.monotonic() + self.cooldown

    async def probe(self) -> dict[str, str]:
        """GET each backend's ``/models`` once; returns backend -> why it is unreachable."""
        async def one(b: Backend) -> str | None:
            headers = {"Authorization": f"Bearer {b.api_key()}"} if b.api_key() else {}
            try:
                r = await self.client.get(b.base_url + "/models", headers=headers, timeout=5.0)
            except httpx.HTTPError as exc:
                self.health[b.name].unreachable = self._describe(exc)
                return self.health[b.name].unreachable
            if r.status_code in (404, 405):  # a wrong path (.../api/v1 for .../v1): every call would 404
                why = f"GET {b.base_url}/models answered HTTP {r.status_code}: is the base URL right?"
                self.health[b.name].unreachable = self.redact(why)
                return self.health[b.name].unreachable
            return None if r.status_code < 500 else f"HTTP {r.status_code}"

        found = await asyncio.gather(*(one(b) for b in self.backends.values()))
        return {name: why for name, why in zip(self.backends, found) if why}

    def in_flight(self, name: str) -> int:
        """Calls of ``name`` holding one of its ``max_concurrency`` slots now."""
        return self.slots[name].busy

    def retry_after(self, name: str) -> int:
        """Seconds until a slot of ``name`` is likely free: its queue times its recent call time."""
        limit = self.backends[name].max_concurrency
        return max(1, round((self.waiting[name] + 1) * self.recent_ms[name] / 1000.0 / limit))

    # -- calls ---------------------------------------------------------------------------------
    def _request(self, name: str, kind: str, body: dict, stream: bool) -> httpx.Request:
        b = self.backends[name]
        payload = {**body, "model": b.model_id, "stream": stream}
        if not stream:
            payload.pop("stream_options", None)
        headers = {"Authorization": f"Bearer {b.api_key()}"} if b.api_key() else {}
        headers["Content-Type"] = "application/json"
        self.tracing.inject(headers)  # the current span's traceparent: the backend's trace goes on from ours
        content = json.dumps(payload, ensure_ascii=False).encode("utf-8")  # the request core checked it encodes
        return self.client.build_request("POST", b.base_url + _PATHS[kind], content=content, headers=headers)

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
            return f"timed out after {self.timeout:g} s from dispatch (--timeout)"
        if isinstance(exc, httpx.HTTPError):
            return f"{type(exc).__name__}: {exc}"[:300]
        return str(exc)[:300]

    async def _error(self, response: httpx.Response) -> BackendError:
        raw = (await response.aread()).decode("utf-8", "replace")
        try:
            message = json.loads(raw)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = raw
        status = response.status_code
        fault = "request" if 400 <= status < 500 and status not in BACKEND_4XX else "backend"
        return BackendError(self.redact(f"HTTP {status}: {message}"[:300]), fault, status)

    @asynccontextmanager
    async def _slot(self, name: str, background: bool = False):
        """A slot of ``name``'s concurrency limit, waited for at most ``max_queue_wait``;
        ``background`` work waits while any foreground call waits (:class:`Slots`)."""
        slots = self.slots[name]
        ahead = 0 if background else 1  # ``waiting``: the calls a new client call would queue behind
        self.waiting[name] += ahead
        try:
            with self.tracing.span("queue wait", attributes={"smoothie.backend": name,
                                                             "smoothie.queued_behind": self.waiting[name] - ahead}):
                await asyncio.wait_for(slots.acquire(background), self.max_queue_wait)
        except TimeoutError:
            raise BackendError(f"queued out: no free slot within {self.max_queue_wait:g} s (--max_queue_wait)",
                               "queue") from None
        finally:
            self.waiting[name] -= ahead
        try:
            yield
        finally:
            slots.release()

    def _took(self, name: str, ms: float) -> None:
        self.recent_ms[name] = 0.8 * self.recent_ms[name] + 0.2 * ms

    async def call(self, name: str, kind: str, body: dict, background: bool = False,
                   deadline: float | None = None) -> tuple[dict, float]:
        """The backend's JSON response and its latency in ms (from dispatch); raises BackendError.
        ``background``: no client waits for it, so it yields its place in the queue. ``deadline``:
        the caller's own bound from dispatch (the queue wait is not in it); past it, fault
        ``deadline``, which leaves the backend's health alone."""
        own = deadline is not None and deadline < self.timeout
        async with self._slot(name, background):
            start = time.perf_counter()
            try:
                async with asyncio.timeout(deadline if own else self.timeout):
                    response = await self.client.send(self._request(name, kind, body, stream=False), stream=True)
                    try:
                        if response.status_code >= 400:
                            raise await self._error(response)
                        raw = await response.aread()
                    finally:
                        await response.aclose()
                data = check_response(kind, raw)
            except BackendError as exc:
                if exc.fault == "backend":
                    self._failed(name)
                raise
            except (httpx.HTTPError, TimeoutError) as exc:
                if own and isinstance(exc, TimeoutError):  # the caller's bound, not the backend's fault
                    raise BackendError(f"no answer within {deadline:g} s of dispatch", "deadline") from None
                self._failed(name, exc)
                raise BackendError(self.redact(self._describe(exc))) from None
            except ValueError as exc:  # not an OpenAI response
                self._failed(name)
                raise BackendError(self.redact(f"answered 200 with a body that is not an OpenAI response ({exc})"
                                               [:300])) from None
            ms = (time.perf_counter() - start) * 1000.0
            self._took(name, ms)
            self._ok(name)
            if not answer_text(kind, data).strip():
                raise BackendError("empty answer (no text)", "empty")
            return data, ms

    @asynccontextmanager
    async def stream(self, name: str, kind: str, body: dict) -> AsyncIterator[Stream]:
        """An open streamed response whose status was OK; raises BackendError before the first
        byte if the backend cannot be reached or refuses, so the caller can fall back."""
        async with self._slot(name):
            start = time.perf_counter()
            deadline = time.monotonic() + self.timeout
            try:
                async with asyncio.timeout(self.timeout):
                    response = await self.client.send(self._request(name, kind, body, stream=True), stream=True)
            except (httpx.HTTPError, TimeoutError) as exc:
                self._failed(name, exc)
                raise BackendError(self.redact(self._describe(exc))) from None
            try:
                if response.status_code >= 400:
                    exc = await self._error(response)
                    if exc.fault == "backend":
                        self._failed(name)
                    raise exc
                yield Stream(self, name, response, deadline, start)
            finally:
                await response.aclose()


class Stream:
    """A backend's event stream: ``events()`` yields its JSON events (dicts) until ``[DONE]``,
    each read bounded by the call's deadline; a stream that breaks off, times out or ends
    without ``[DONE]`` raises BackendError and counts as the backend's failure."""

    def __init__(self, pool: BackendPool, name: str, response: httpx.Response, deadline: float, start: float):
        self.pool, self.name, self.response, self.deadline, self.start = pool, name, response, deadline, start
        self.ms: float | None = None

    async def events(self) -> AsyncIterator[dict]:
        lines = self.response.aiter_lines()
        try:
            while True:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                try:
                    line = await asyncio.wait_for(anext(lines), left)
                except StopAsyncIteration:
                    raise BackendError("the stream ended without [DONE]") from None
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    self.ms = (time.perf_counter() - self.start) * 1000.0
                    self.pool._took(self.name, self.ms)
                    self.pool._ok(self.name)
                    return
                try:
                    event = loads_bounded(data)
                except ValueError as exc:
                    raise BackendError(f"the stream sent an event that is not usable JSON ({exc})") from None
                if isinstance(event, dict) and event.get("error"):
                    err = event["error"]
                    raise BackendError(self.pool.redact(f"error event: {err.get('message', err) if isinstance(err, dict) else err}"[:300]))
                if isinstance(event, dict):
                    yield event
        except BackendError:
            self.pool._failed(self.name)
            raise
        except (httpx.HTTPError, TimeoutError) as exc:
            self.pool._failed(self.name, exc)
            raise BackendError(self.pool.redact(self.pool._describe(exc))) from None
