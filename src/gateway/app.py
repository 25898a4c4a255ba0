"""The gateway's ASGI application (FastAPI): OpenAI's routes in front of several backends.

``POST /v1/chat/completions`` and ``POST /v1/completions`` either go to the backend that
``model`` names, or are routed by :class:`src.gateway.policy.Router`; ``GET /v1/models``,
``GET /health`` and ``GET /metrics`` report. Embedding runs on a worker thread, so a slow one
never stalls the event loop; the store is written before a response is sent.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from src.cleaning import clean_generation
from src.gateway.backends import BackendError, BackendPool
from src.gateway.config import Settings
from src.gateway.metrics import Metrics
from src.gateway.policy import Router
from src.gateway.protocol import CHAT, COMPLETION, ApiError, answer_text, parse, sse, stream_chunks
from src.gateway.store import Fanout, FanoutStore

log = logging.getLogger("src.serve")


class Gateway:
    """Everything one running gateway holds: settings, router, backends, embedder, metrics."""

    def __init__(self, settings: Settings, embedder):
        self.settings, self.embedder = settings, embedder
        self.store = FanoutStore(settings.store, embedder.identity, settings.store_max_rows)
        self.router = Router([b.name for b in settings.backends], self.store, policy=settings.policy,
                             k=settings.k, explore=settings.explore, warmup=settings.warmup,
                             window=settings.window, seed=settings.seed)
        self.pool = BackendPool(settings.backends, timeout=settings.timeout, max_failures=settings.max_failures,
                                cooldown=settings.cooldown)
        self.metrics = Metrics()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._api_key = os.environ[settings.api_key_env].encode() if settings.api_key_env else None

    async def close(self) -> None:
        await self.pool.aclose()
        self.executor.shutdown(wait=True)
        self.store.close()

    # -- helpers -------------------------------------------------------------------------------
    def authorize(self, request: Request) -> None:
        if self._api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:].encode() if given.lower().startswith("bearer ") else b""
        if not hmac.compare_digest(token, self._api_key):
            raise ApiError(401, "missing or incorrect API key (Authorization: Bearer ...)", code="invalid_api_key")

    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
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

    async def embed(self, texts: list[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.embedder.embed, texts)

    def _answer_for_embedding(self, kind: str, response: dict) -> str:
        text = answer_text(kind, response)
        return clean_generation(text) if self.settings.clean else text

    def _finish(self, rid: str, path: str, policy: str, status: int, start: float, chosen: str | None = None,
                **extra) -> None:
        seconds = time.perf_counter() - start
        self.metrics.requests.labels(policy, str(status)).inc()
        self.metrics.latency.labels(policy).observe(seconds)
        if chosen:
            self.metrics.chosen.labels(chosen).inc()
        log.info(json.dumps({"id": rid, "path": path, "policy": policy, "chosen": chosen, "status": status,
                             "latency_ms": round(seconds * 1000, 1), **extra}))

    def _count_call(self, name: str, outcome: str, ms: float | None = None) -> None:
        self.metrics.backend_calls.labels(name, outcome).inc()
        if ms is not None:
            self.metrics.backend_latency.labels(name).observe(ms / 1000)

    def _usable(self, order: list[str], failed: dict[str, str]) -> list[str]:
        """``order`` without backends cooling down (noted in ``failed``), unless every one is."""
        usable = [b for b in order if not self.pool.cooling(b)]
        if not usable:
            return list(order)
        for b in order:
            if b not in usable:
                failed[b] = self.pool.cooling(b)
                self._count_call(b, "skipped")
        return usable

    def _respond(self, kind: str, response: dict, rid: str, chosen: str, smoothie: dict, stream: bool) -> Response:
        out = {**response, "id": rid, "model": chosen, "smoothie": smoothie}
        if not stream:
            return JSONResponse(out)
        chunks = stream_chunks(kind, out, smoothie)
        return StreamingResponse(iter([*(sse(c) for c in chunks), sse("[DONE]")]), media_type="text/event-stream")

    # -- requests ------------------------------------------------------------------------------
    async def completion(self, request: Request, kind: str) -> Response:
        start = time.perf_counter()
        rid = f"{'chatcmpl' if kind == CHAT else 'cmpl'}-{uuid.uuid4().hex}"
        path = request.url.path
        try:
            self.authorize(request)
            req = parse(await self.read_body(request), kind)
        except ApiError as exc:
            self._finish(rid, path, "rejected", exc.status, start, error=exc.message)
            raise
        direct = req.model if req.model and self.settings.backend(req.model) else None
        policy = "direct" if direct else self.settings.policy
        try:
            response = await (self._direct(req, rid, direct) if direct else self._routed(req, rid))
        except ApiError as exc:
            self._finish(rid, path, policy, exc.status, start, error=exc.message)
            raise
        info = getattr(response, "smoothie", {})
        self._finish(rid, path, policy, response.status_code, start, chosen=info.get("chosen"),
                     called=info.get("called"), failed=sorted(info.get("failed", {})))
        return response

    def _all_failed(self, failed: dict[str, str], smoothie: dict) -> ApiError:
        detail = "; ".join(f"{b}: {e}" for b, e in failed.items())
        return ApiError(502, f"no backend answered ({detail})", type_="upstream_error", code="backends_failed",
                        extra={"smoothie": smoothie})

    async def _direct(self, req, rid: str, name: str) -> Response:
        smoothie = {"policy": "direct", "chosen": None, "weights": None, "called": [], "failed": {},
                    "latency_ms": {}}
        return await self._single(req, rid, [name], smoothie)

    async def _routed(self, req, rid: str) -> Response:
        s = self.settings
        seq = self.store.next_sequence()
        input_vec = None
        if s.policy == "local" and self.router.n_complete() >= max(self.router.warmup, 1):
            input_vec = (await self.embed([req.text]))[0]
        decision = self.router.decide(seq, input_vec)
        smoothie = {"policy": s.policy, "mode": decision.reason, "chosen": None, "weights": decision.weights,
                    "called": [], "failed": {}, "latency_ms": {}}
        if not decision.fanout:
            return await self._single(req, rid, decision.order, smoothie)
        return await self._fanout(req, rid, decision.order, input_vec, smoothie)

    async def _fanout(self, req, rid: str, order: list[str], input_vec, smoothie: dict) -> Response:
        failed, latency = smoothie["failed"], smoothie["latency_ms"]
        called = self._usable(order, failed)
        smoothie["called"] = called
        results = await asyncio.gather(*(self.pool.call(b, req.kind, req.body) for b in called),
                                       return_exceptions=True)
        answers: dict[str, dict] = {}
        for b, result in zip(called, results):
            if isinstance(result, BackendError):
                failed[b] = str(result)
                self._count_call(b, "error")
            elif isinstance(result, BaseException):
                raise result
            else:
                answers[b], latency[b] = result[0], round(result[1], 1)
                self._count_call(b, "ok", result[1])
        if not answers:
            raise self._all_failed(failed, smoothie)
        names = list(answers)
        texts = [self._answer_for_embedding(req.kind, answers[b]) for b in names]
        if input_vec is None:
            vecs = await self.embed([req.text, *texts])
            input_vec, vecs = vecs[0], vecs[1:]
        else:
            vecs = await self.embed(texts)
        by_name = dict(zip(names, vecs))
        empty = frozenset(b for b in names if not answer_text(req.kind, answers[b]).strip())
        chosen, weights = self.router.choose(by_name, input_vec, empty)
        self.router.record(Fanout(rid, req.text, input_vec,
                                  {b: answer_text(req.kind, answers[b]) for b in names}, by_name))
        smoothie.update(chosen=chosen, weights=weights)
        response = self._respond(req.kind, answers[chosen], rid, chosen, smoothie, req.stream)
        response.smoothie = smoothie
        return response

    async def _single(self, req, rid: str, order: list[str], smoothie: dict) -> Response:
        """Ask ``order``'s backends one at a time until one answers (streamed or not)."""
        failed, latency = smoothie["failed"], smoothie["latency_ms"]
        candidates = order if smoothie["policy"] == "direct" else self._usable(order, failed)
        for b in candidates:
            smoothie["called"].append(b)
            started = time.perf_counter()
            if not req.stream:
                try:
                    data, ms = await self.pool.call(b, req.kind, req.body)
                except BackendError as exc:
                    failed[b] = str(exc)
                    self._count_call(b, "error")
                    continue
                latency[b] = round(ms, 1)
                self._count_call(b, "ok", ms)
                smoothie["chosen"] = b
                response = self._respond(req.kind, data, rid, b, smoothie, stream=False)
                response.smoothie = smoothie
                return response
            stack = AsyncExitStack()
            try:
                upstream = await stack.enter_async_context(self.pool.stream(b, req.kind, req.body))
            except BackendError as exc:
                await stack.aclose()
                failed[b] = str(exc)
                self._count_call(b, "error")
                continue
            ms = (time.perf_counter() - started) * 1000
            latency[b] = round(ms, 1)
            self._count_call(b, "ok", ms)
            smoothie["chosen"] = b
            response = StreamingResponse(self._relay(upstream, stack, rid, b, smoothie),
                                         media_type="text/event-stream")
            response.smoothie = smoothie
            return response
        raise self._all_failed(failed, smoothie)

    async def _relay(self, upstream, stack: AsyncExitStack, rid: str, chosen: str, smoothie: dict):
        """Pass a backend's event stream through, naming the backend as ``model`` and adding
        ``smoothie`` to the first event."""
        first = True
        try:
            async for line in upstream.aiter_lines():
                if not line.startswith("data:"):
                    if line.startswith(":"):
                        yield f"{line}\n\n".encode()
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    yield sse("[DONE]")
                    continue
                try:
                    event = json.loads(data)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    event.update(id=rid, model=chosen)
                    if first:
                        event["smoothie"] = smoothie
                        first = False
                yield sse(event)
        except Exception as exc:  # the backend broke off mid-stream: end ours, say so in the log
            log.warning(json.dumps({"id": rid, "event": "stream_broken", "backend": chosen,
                                    "error": self.pool.redact(f"{type(exc).__name__}: {exc}")[:200]}))
        finally:
            await stack.aclose()

    def models(self) -> dict:
        names = [self.settings.router_name, *(b.name for b in self.settings.backends)]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "smoothie"}
                                           for n in names]}

    def health(self) -> dict:
        return {"status": "ok", "policy": self.settings.policy, "store_rows": self.router.n_rows,
                "backends": {b.name: self.pool.cooling(b.name) or "ok" for b in self.settings.backends}}

    def metrics_text(self) -> bytes:
        weights = self.router.global_weights()
        if weights is not None:
            for name, w in zip(self.router.backends, weights):
                self.metrics.weight.labels(name).set(float(w))
        self.metrics.stored.set(self.router.n_rows)
        return generate_latest(self.metrics.registry)


def create_app(settings: Settings, embedder) -> FastAPI:
    """The FastAPI app for ``settings``; ``embedder`` is a :class:`src.embeddings.Embedder`."""
    gateway = Gateway(settings, embedder)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await gateway.close()

    app = FastAPI(title="Smoothie gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gateway

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(ApiError(exc.status_code, message, code=code).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # a bug of ours: still an OpenAI-style body, logged
        log.error(json.dumps({"path": request.url.path, "error": gateway.pool.redact(f"{type(exc).__name__}: {exc}")}))
        return JSONResponse(ApiError(500, "internal error in the gateway (see its log)", type_="server_error",
                                     code="internal_error").body(), status_code=500)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await gateway.completion(request, CHAT)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await gateway.completion(request, COMPLETION)

    @app.get("/v1/models")
    async def models(request: Request):
        gateway.authorize(request)
        return gateway.models()

    @app.get("/health")
    async def health():
        return gateway.health()

    @app.get("/metrics")
    async def metrics():
        return Response(gateway.metrics_text(), media_type=CONTENT_TYPE_LATEST)

    return app
