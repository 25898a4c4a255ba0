"""Calls to the backends: one shared async HTTP client, timeouts, and a cool-down for a backend
that keeps failing (it is skipped for ``cooldown`` seconds after ``max_failures`` failures in a
row, then tried again). Error texts never contain a backend's API key."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from src.gateway.config import Backend
from src.gateway.protocol import CHAT

_PATHS = {CHAT: "/chat/completions", "completion": "/completions"}


class BackendError(Exception):
    """A backend failed this request; the message says how (without secrets)."""


@dataclass
class _Health:
    failures: int = 0  # in a row
    cooling_until: float = 0.0


class BackendPool:
    def __init__(self, backends: list[Backend], *, timeout: float, max_failures: int, cooldown: float):
        self.backends = {b.name: b for b in backends}
        self.max_failures, self.cooldown = max_failures, cooldown
        self.health = {b.name: _Health() for b in backends}
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout),
                                        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        self._secrets = [k for k in (b.api_key() for b in backends) if k]

    async def aclose(self) -> None:
        await self.client.aclose()

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def cooling(self, name: str) -> str | None:
        """Why ``name`` is skipped now, or None if it may be called."""
        left = self.health[name].cooling_until - time.monotonic()
        if left > 0:
            return f"skipped: {self.health[name].failures} failures in a row, cooling down ({left:.0f} s left)"
        return None

    def _ok(self, name: str) -> None:
        self.health[name] = _Health()

    def _failed(self, name: str) -> None:
        h = self.health[name]
        h.failures += 1
        if h.failures >= self.max_failures:
            h.cooling_until = time.monotonic() + self.cooldown

    def _request(self, name: str, kind: str, body: dict, stream: bool) -> httpx.Request:
        b = self.backends[name]
        payload = {**body, "model": b.model_id, "stream": stream}
        if not stream:
            payload.pop("stream_options", None)
        headers = {"Authorization": f"Bearer {b.api_key()}"} if b.api_key() else {}
        return self.client.build_request("POST", b.base_url + _PATHS[kind], json=payload, headers=headers)

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, httpx.TimeoutException):
            return f"timed out ({type(exc).__name__})"
        if isinstance(exc, httpx.HTTPError):
            return f"{type(exc).__name__}: {exc}"[:300]
        return str(exc)[:300]

    async def _error_text(self, response: httpx.Response) -> str:
        raw = (await response.aread()).decode("utf-8", "replace")
        try:
            message = json.loads(raw)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = raw
        return f"HTTP {response.status_code}: {message}"[:300]

    async def call(self, name: str, kind: str, body: dict) -> tuple[dict, float]:
        """The backend's JSON response and its latency in ms; raises BackendError."""
        start = time.perf_counter()
        try:
            response = await self.client.send(self._request(name, kind, body, stream=False))
            if response.status_code >= 400:
                raise BackendError(await self._error_text(response))
            data = response.json()
            if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
                raise BackendError("the response has no 'choices'")
        except (httpx.HTTPError, ValueError, BackendError) as exc:
            self._failed(name)
            raise BackendError(self.redact(self._describe(exc))) from None
        self._ok(name)
        return data, (time.perf_counter() - start) * 1000.0

    @asynccontextmanager
    async def stream(self, name: str, kind: str, body: dict) -> AsyncIterator[httpx.Response]:
        """An open streamed response whose status was OK; raises BackendError before the first
        byte if the backend cannot be reached or refuses, so the caller can fall back."""
        try:
            response = await self.client.send(self._request(name, kind, body, stream=True), stream=True)
        except httpx.HTTPError as exc:
            self._failed(name)
            raise BackendError(self.redact(self._describe(exc))) from None
        try:
            if response.status_code >= 400:
                self._failed(name)
                raise BackendError(self.redact(await self._error_text(response)))
            self._ok(name)
            yield response
        finally:
            await response.aclose()
