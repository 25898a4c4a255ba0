"""The gateway's HTTP layer (FastAPI): OpenAI's routes, auth, body limits, SSE framing and error
bodies around the request core (``src.gateway.core``), which holds every routing decision.

``POST /v1/chat/completions`` and ``POST /v1/completions`` go to the core; ``GET /v1/models``,
``GET /health`` and ``GET /metrics`` report. Every response, a 500 included, gets the core's log
line and metrics.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from src.gateway.backends import BackendPool
from src.gateway.config import Settings
from src.gateway.core import Core, Reply
from src.gateway.dashboard import PAGE
from src.gateway.pgstore import is_postgres
from src.gateway.protocol import CHAT, COMPLETION, ApiError
from src.gateway.redact import Redactor
from src.gateway.store import FanoutStore


def open_store(settings: Settings, identity: str):
    """The store ``--store`` names: PostgreSQL (shared by replicas) or a SQLite file."""
    where = settings.store_location
    if is_postgres(where):
        from src.gateway.pgstore import PostgresFanoutStore

        return PostgresFanoutStore(where, identity, settings.store_max_rows, settings.store_timeout)
    return FanoutStore(where, identity, settings.store_max_rows, settings.store_timeout)


def build_core(settings: Settings, embedder, tracing=None) -> Core:
    """The core with the live backend pool and the store at ``--store``; ``tracing``: a
    ``src.gateway.tracing.Tracing`` in place of ``--otel_endpoint``'s (tests)."""
    judge = settings.judge_backend()  # --judge URL: a backend of the pool that is never routed to
    pool = BackendPool([*settings.backends, *([judge] if judge else [])], timeout=settings.timeout, max_failures=settings.max_failures,
                       cooldown=settings.cooldown, max_queue_wait=settings.max_queue_wait,
                       redact=Redactor.for_settings(settings))
    return Core(settings, embedder, pool, open_store(settings, embedder.identity), tracing=tracing)


def _send(reply: Reply) -> Response:
    if reply.events is not None:
        return StreamingResponse(reply.events, status_code=reply.status, media_type="text/event-stream",
                                 headers=reply.headers)
    return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)


def create_app(settings: Settings, embedder, on_start=None, tracing=None) -> FastAPI:
    """The FastAPI app for ``settings``; ``embedder`` is a :class:`src.embeddings.Embedder`.
    ``on_start(unreachable)`` is told which backends did not answer the start-up probe."""
    api_key = os.environ[settings.api_key_env].encode() if settings.api_key_env else None
    holder: dict[str, Core] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        core = holder["core"] = app.state.core = build_core(settings, embedder, tracing)  # its locks live on this loop
        unreachable = await core.start()
        if on_start:
            on_start(unreachable)
        yield
        await core.close()

    app = FastAPI(title="Smoothie gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def authorize(request: Request, basic: bool = False) -> None:
        """The key as ``Authorization: Bearer KEY``; ``basic``: also as HTTP Basic's password
        (what a browser sends for /dashboard after asking its user)."""
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:].encode() if given.lower().startswith("bearer ") else b""
        if basic and given.lower().startswith("basic "):
            try:
                token = base64.b64decode(given[6:], validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                token = b""
        if not hmac.compare_digest(token, api_key):
            raise ApiError(401, "missing or incorrect API key (Authorization: Bearer ...)", code="invalid_api_key",
                           headers={"WWW-Authenticate": 'Basic realm="smoothie dashboard"'} if basic else {})

    async def read_body(request: Request) -> bytes:
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        too_big = ApiError(413, f"request body exceeds {limit} bytes (--max_body_bytes)", code="request_too_large")
        if declared.isdigit() and int(declared) > limit:
            raise too_big
        size, parts = 0, []
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            parts.append(chunk)
        return b"".join(parts)

    async def completion(request: Request, kind: str) -> Response:
        start = time.perf_counter()
        core = holder["core"]
        try:
            authorize(request)
            raw = await read_body(request)
        except ApiError as exc:
            return _send(core.reject(request.url.path, exc, start))
        try:
            return _send(await core.handle(kind, raw, request.url.path, start, dict(request.headers)))
        except Exception as exc:  # a bug of ours: still an OpenAI-style 500, logged and counted
            return _send(core.crashed(request.url.path, exc, start))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        error = ApiError(exc.status_code, message, code=code)
        if "core" in holder:
            return _send(holder["core"].reject(request.url.path, error, time.perf_counter()))
        return JSONResponse(error.body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        return _send(holder["core"].crashed(request.url.path, exc, time.perf_counter()))

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await completion(request, CHAT)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await completion(request, COMPLETION)

    @app.get("/v1/models")
    async def models(request: Request):
        try:
            authorize(request)
        except ApiError as exc:
            return _send(holder["core"].reject(request.url.path, exc, time.perf_counter()))
        return holder["core"].models()

    def report_refused(request: Request) -> Response | None:
        """With --protect_reports, /health and /metrics want the key too."""
        if not settings.protect_reports:
            return None
        try:
            authorize(request)
        except ApiError as exc:
            return _send(holder["core"].reject(request.url.path, exc, time.perf_counter()))
        return None

    @app.get("/health")
    async def health(request: Request):
        return report_refused(request) or holder["core"].health()

    def page_refused(request: Request) -> Response | None:
        """/dashboard wants the --api_key_env key whenever one is set: it shows every decision."""
        try:
            authorize(request, basic=True)
        except ApiError as exc:
            return _send(holder["core"].reject(request.url.path, exc, time.perf_counter()))
        return None

    @app.get("/dashboard")
    async def dashboard(request: Request):
        return page_refused(request) or HTMLResponse(PAGE.read_text(encoding="utf-8"),
                                                     headers={"Cache-Control": "no-store"})

    @app.get("/dashboard/data")
    async def dashboard_data(request: Request):
        return page_refused(request) or JSONResponse(holder["core"].dashboard_data(),
                                                     headers={"Cache-Control": "no-store"})

    @app.get("/dashboard/decision/{rid}")
    async def dashboard_decision(rid: str, request: Request):
        if refused := page_refused(request):
            return refused
        found = holder["core"].dashboard.decision(rid)
        if found is None:
            return _send(holder["core"].reject(request.url.path, ApiError(
                404, f"no decision {rid} among the last 50 (older ones are in the log)", code="not_found"),
                time.perf_counter()))
        return JSONResponse(holder["core"].clean(found))

    @app.get("/metrics")
    async def metrics(request: Request):
        return report_refused(request) or Response(holder["core"].metrics_text(), media_type=CONTENT_TYPE_LATEST)

    return app
