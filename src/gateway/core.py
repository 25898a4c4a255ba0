"""The request core: validate, decide, call, embed, choose, record, respond. No HTTP types.

``src.serve`` wraps it in FastAPI (``src.gateway.app``: routes, auth, body limits, SSE framing);
``src.replay`` drives it with backends that answer from files, with N requests in flight as the
server would have. Both therefore route with the same code and the same defaults.

``Core`` keeps the life cycle (start, the store poller, close) and the orchestration of a request
(decide, call, embed, choose, record); its other jobs live in files named for them and are mixed
in: numbering and visibility (``sequencing``), the judge's work (``judging``), answers and streams
(``relay``), and ``/health``, ``/dashboard/data`` and ``/metrics`` (``reports``).

The invariants it keeps (SPEC 9):
- No request waits for another request's backend calls. A routed request's decision depends
  only on the stored rows it sees (those of requests numbered below its own minus ``--lag``,
  stored when it was numbered: ``src.gateway.policy``'s pin), the seed, its sequence number and
  its text. What it did not see is in its log line (``unseen``), so ``src.replay --server_log``
  reproduces it exactly.
- No secret (key, password in a URL or DSN) appears in a response body, log line or report
  (``src.gateway.redact``).
- Every response, errors included, has one JSON log line and its metrics.
- An empty answer is a failed answer; it never enters the estimate.
- Nothing a client sends changes a backend's health (``src.gateway.backends``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from src.cleaning import clean_generation
from src.gateway.backends import OUTCOME, BackendError
from src.gateway.config import Settings
from src.gateway.dashboard import Dashboard
from src.gateway.embedding import EmbeddingChanged, EmbeddingRefused, EmbeddingUnavailable, EmbeddingWorker
from src.gateway.judge import LiveJudge, Verdict
from src.gateway.judging import Judging
from src.gateway.metrics import Metrics
from src.gateway.policy import Router, spread_draw
from src.gateway.ports import Store
from src.gateway.protocol import (
    CHAT,
    ApiError,
    Request,
    answer_text,
    parse,
    usage_of,
    usage_sum,
)
from src.gateway.redact import Redactor
from src.gateway.relay import Relay, Reply
from src.gateway.reports import Reports
from src.gateway.sequencing import Seen, Sequencing
from src.gateway.store import Fanout, StoreUnavailable, store_errors, without_text
from src.gateway.tracing import CLIENT, Tracing, error_status, set_attributes

log = logging.getLogger("src.serve")


@dataclass
class _Call:
    """One request on its way through the core."""

    rid: str
    path: str
    start: float
    req: Request
    policy: str
    seq: int | None = None
    generation: int = 0  # the embedder generation it started under
    judging: bool = False  # its fan-out is being judged after the response: it settles when that ends
    faults: dict[str, BackendError] = field(default_factory=dict)
    smoothie: dict = field(default_factory=dict)

    def failed(self, name: str, why: str) -> None:
        self.smoothie["failed"][name] = why


def _smoothie(policy: str, mode: str) -> dict:
    return {"policy": policy, "mode": mode, "seq": None, "chosen": None, "weights": None, "called": [], "failed": {},
            "latency_ms": {}, "usage_by_backend": {}, "passed_over": {}, "degraded": None, "unseen": [],
            "estimator": None, "contenders": None, "among": None}


class Core(Sequencing, Judging, Relay, Reports):
    """One gateway's routing state and request handling, over a backend pool (``call``,
    ``stream``, health), an embedder (``embed(texts) -> (n, d)``) and a store (``ports.Store``).

    ``recorded`` (replay from a server's log): request number -> what it saw there (``Seen``),
    in place of what is running and which backends are busy here."""

    def __init__(self, settings: Settings, embedder, pool, store: Store, recorded: dict[int, Seen] | None = None,
                 tracing: Tracing | None = None, judge=None):
        s = settings
        self.settings, self.embedder, self.pool, self.store = s, embedder, pool, store
        self.tracing = tracing or Tracing(s.otel_endpoint)
        pool.tracing = self.tracing
        self._spans: dict[str, object] = {}  # request id -> its span, ended with its log line
        # --judge: compares two answers (src.gateway.judge); replay passes its own (a URL, or simulated)
        self.judge = judge if judge is not None else (LiveJudge(self._judge_call) if s.judge_kind else None)
        self.names = [b.name for b in s.backends]
        self.router = self._new_router()  # filled from the store by start()
        self._store_threads = ThreadPoolExecutor(store.threads, thread_name_prefix="store")
        self.generation = 0  # counts embedder changes: vectors of an older generation are never used
        self._identities = {0: store.embedder}  # generation -> the embedder identity its rows are stored under
        self.embedder_changes: list[dict] = []
        if hasattr(embedder, "redact"):
            embedder.redact = Redactor.for_settings(s)
        self.metrics = Metrics()
        self.dashboard = Dashboard(self.names)
        self.executor = EmbeddingWorker(embedder, s.embedding_batch_size, s.embedding_batch_wait_ms)
        self.redact = Redactor.for_settings(s)
        self.recorded = recorded
        self._last_seq = -1  # the highest request number this process gave out (reports look one past it)
        self._unsettled: set[int] = set()  # requests deciding, or fanning out before their response
        self._late: set[int] = set()  # explore fan-outs running after their response
        self._tasks: set[asyncio.Task] = set()
        self._poller: asyncio.Task | None = None
        self._sampler: asyncio.Task | None = None

    def _new_router(self, rows=()) -> Router:
        s = self.settings
        router = Router(self.names, policy=s.policy, k=s.k, explore=s.explore, warmup=s.warmup_rows,
                        window=s.window, seed=s.seed, lag=s.lag, explore_lag=s.explore_lag,
                        fanout_rule=s.fanout_rule, budget=s.budget)
        for row in rows:
            router.add(row)
        return router

    async def _db(self, fn, *args):
        """A store call, on the store's own threads (never the event loop): a locked table or a
        database that went away costs the requests that need it, bounded by ``--store_timeout``;
        it fails with ``StoreUnavailable``, never hangs the gateway."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._store_threads, fn, *args)
        except store_errors() as exc:
            self.metrics.store_failures.inc()
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreUnavailable(self.redact(f"{type(exc).__name__}: {first}")[:300]) from None

    def _store_down(self, exc: StoreUnavailable) -> ApiError:
        return ApiError(503, f"the store is unavailable ({exc}); retry shortly", type_="server_error",
                        code="store_unavailable", headers={"Retry-After": "2"})

    async def _embedder_changed(self, old: str, new: str) -> None:
        """Another model answers behind ``--embedding_url``: its vectors start a set of rows of
        their own (the store keys rows by embedder), routing starts again from the warm-up, and
        requests embedded by the old model are answered 503 ``embedding_changed`` (retryable).
        The generation, the store's identity and the router change together, before any await,
        so no request can pair new vectors with the old rows; rows the new model made before (a
        model switched back) are loaded afterwards into that same router."""
        self.generation += 1
        self._identities[self.generation] = new
        self.store.embedder = new
        router = self.router = self._new_router()
        self.embedder_changes.append({"from": old, "to": new, "at": time.time()})
        rows = await self._db(self.store.rows)
        if self.router is router:
            for row in sorted(rows, key=lambda r: r.seq):
                router.add(row)
        self.metrics.stored.set(self.router.n_rows)
        log.warning(self.redact(json.dumps({"event": "embedding_changed", "from": old, "to": new,
                                            "rows_of_new_model": len(rows)})))

    # -- life ----------------------------------------------------------------------------------
    async def start(self, probe: bool = True) -> dict[str, str]:
        """Load the stored rows; resume the explore fan-outs a previous run answered but did not
        store; probe the backends. Returns backend -> why it is unreachable."""
        self.router = self._new_router(await self._db(self.store.rows))
        self.metrics.stored.set(self.router.n_rows)
        if self.router.n_rows:
            self._last_seq = int(self.router.seqs[: self.router.n_rows].max())
        if self.settings.policy == "adaptive":
            self.router.uncertainty.update(await self._db(self.store.scores))
        if self.judge is not None:
            self.router.add_verdicts(Verdict(**v) for v in await self._db(self.store.verdicts))
        for seq, rid, job in await self._db(self.store.pending):
            self._late.add(seq)
            self._spawn(self._background(seq, rid, job))
        if self.store.shared:  # a store shared with other replicas: learn what they store
            self._poller = asyncio.get_running_loop().create_task(self._poll_store())
        self._sampler = asyncio.get_running_loop().create_task(self._sample_view())
        return await self.pool.probe() if probe else {}

    async def _poll_store(self) -> None:
        """Every ``--store_poll_interval`` seconds: add the fan-outs other replicas stored, and drop
        the rows any replica evicted, in this replica's mirror; with a judge, add the verdicts
        other replicas' judges gave."""
        while True:
            await asyncio.sleep(self.settings.store_poll_interval)
            try:  # each read applied as soon as it is in: a failed verdict read loses no rows
                rows, dropped = await self._db(self.store.poll)
                self.router.drop(dropped)
                for row in rows:
                    self.router.add(row)
                    self._last_seq = max(self._last_seq, row.seq)  # reports look past the others' numbers too
                self.metrics.stored.set(self.router.n_rows)
                if self.judge is not None:
                    self.router.add_verdicts(Verdict(**v) for v in await self._db(self.store.new_verdicts))
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not end the polling
                log.error(self.redact(json.dumps({"event": "store_poll_failed",
                                                  "error": f"{type(exc).__name__}: {exc}"[:300]})))

    async def drain(self) -> None:
        """Wait for every explore fan-out still running (replay's end; a server's shutdown)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        for task in (self._poller, self._sampler):
            if task is not None:
                task.cancel()
        if self._tasks:  # give running fan-outs their time; the rest stay pending for the next start
            await asyncio.wait(set(self._tasks), timeout=self.settings.timeout + 5)
            for task in self._tasks:
                task.cancel()
        await self.pool.aclose()
        self.executor.shutdown()
        self._store_threads.shutdown(wait=True)
        self.store.close()
        self.tracing.shutdown()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- bookkeeping -----------------------------------------------------------------------------
    def _count(self, name: str, outcome: str, ms: float | None = None, usage: dict | None = None) -> None:
        self.dashboard.called(name, outcome, ms, usage)
        self.metrics.backend_calls.labels(name, outcome).inc()
        if ms is not None:
            self.metrics.backend_latency.labels(name).observe(ms / 1000)
        if usage:
            self.metrics.tokens.labels(name, "prompt").inc(usage.get("prompt_tokens") or 0)
            self.metrics.tokens.labels(name, "completion").inc(usage.get("completion_tokens") or 0)

    def finish(self, rid: str, path: str, policy: str, status: int, start: float, smoothie: dict | None = None,
               error: str | None = None) -> None:
        """The one log line and the metrics of a response (errors, 500s and broken streams included)."""
        seconds = time.perf_counter() - start
        self.metrics.requests.labels(policy, str(status)).inc()
        self.metrics.latency.labels(policy).observe(seconds)
        s = smoothie or {}
        chosen = s.get("chosen") if status == 200 else None
        if chosen:
            self.metrics.chosen.labels(chosen, "direct" if policy == "direct" else "routed").inc()
        line = {"id": rid, "path": path, "policy": policy, "mode": s.get("mode"), "chosen": chosen, "status": status,
                "latency_ms": round(seconds * 1000, 1), "seq": s.get("seq"), "unseen": s.get("unseen") or [],
                "called": s.get("called"), "calls": len(s.get("called") or []), "failed": s.get("failed") or {},
                "latency_by_backend": s.get("latency_ms") or {}, "usage": usage_sum((s.get("usage_by_backend") or {}).values())
                if s.get("usage_by_backend") else None}
        if s.get("contenders"):
            line["contenders"] = s["contenders"]
        if s.get("among"):
            line["among"] = s["among"]  # what src.replay --server_log draws among
        if policy not in ("direct", "rejected", "error") and self.router.last_agreement() is not None:
            line["agreement"] = self.router.last_agreement()  # as the x-smoothie-agreement header says
        if s.get("degraded"):
            line["degraded"] = True
        if error:
            line["error"] = error[:300]
        log.info(self.redact(json.dumps(line)))
        self.dashboard.decided(line, s)
        self._end_span(line, s)

    def _end_span(self, line: dict, smoothie: dict) -> None:
        """End the request's span with what its log line says (a request refused before the core
        parsed it gets a span of its own here)."""
        span = self._spans.pop(line["id"], None)
        if span is None:
            if not self.tracing.enabled:
                return
            span = self.tracing.start_request(f"POST {line['path']}", None, {})
        usage = line["usage"] or {}
        set_attributes(span, {"http.response.status_code": line["status"], "smoothie.policy": line["policy"],
                              "smoothie.mode": line["mode"], "smoothie.chosen": line["chosen"],
                              "smoothie.seq": line["seq"], "smoothie.calls": line["calls"],
                              "smoothie.called": list(line["called"] or []),
                              "smoothie.failed": [f"{b}: {why}"[:200] for b, why in line["failed"].items()],
                              "smoothie.outcome": "ok" if line["status"] == 200 else (line.get("error") or "")[:200],
                              "smoothie.agreement": line.get("agreement"),
                              "gen_ai.usage.input_tokens": usage.get("prompt_tokens"),
                              "gen_ai.usage.output_tokens": usage.get("completion_tokens")})
        if line["status"] >= 500:
            span.set_status(error_status(line.get("error") or str(line["status"])))
        span.end()

    def reject(self, path: str, exc: ApiError, start: float) -> Reply:
        """A request refused before the core parsed it (auth, body size): logged and counted."""
        self.finish(f"rejected-{uuid.uuid4().hex[:12]}", path, "rejected", exc.status, start, error=exc.message)
        return self._error_reply(exc)

    def _error_reply(self, exc: ApiError, call: _Call | None = None) -> Reply:
        headers = {**exc.headers, **(self._decision_headers(call) if call is not None else {})}
        return Reply(exc.status, self.clean(exc.body()), headers=headers)

    def _decision_headers(self, call: _Call) -> dict[str, str]:
        """What was decided, as response headers (set before the first byte, streams included),
        for clients and proxies that read only headers: the request id, its number, the mode, the
        backend chosen, the backend calls made before the response, and the Global ranking's
        bootstrap agreement as last computed (for /health, /metrics or the adaptive policy;
        absent until then)."""
        s = call.smoothie
        headers = {"x-smoothie-request-id": call.rid, "x-smoothie-mode": str(s.get("mode") or ""),
                   "x-smoothie-calls": str(len(s.get("called") or []))}
        if s.get("seq") is not None:
            headers["x-smoothie-seq"] = str(s["seq"])
        if s.get("chosen"):
            headers["x-smoothie-chosen"] = s["chosen"]
        agreement = self.router.last_agreement()
        if agreement is not None and call.policy != "direct":
            headers["x-smoothie-agreement"] = f"{agreement:.4f}"
        if s.get("contenders"):
            headers["x-smoothie-contenders"] = ",".join(f"{b}={v:g}" for b, v in s["contenders"].items())
        return headers

    def clean(self, data: dict) -> dict:
        """``data`` with every secret redacted: what leaves the gateway as JSON."""
        return json.loads(self.redact(json.dumps(data)))

    def crashed(self, path: str, exc: BaseException, start: float) -> Reply:
        """A bug of ours: still an OpenAI-style body, one log line and the metrics."""
        error = ApiError(500, "internal error in the gateway (see its log)", type_="server_error", code="internal_error")
        self.finish(f"error-{uuid.uuid4().hex[:12]}", path, "error", 500, start, error=f"{type(exc).__name__}: {exc}")
        return Reply(500, error.body())

    # -- requests --------------------------------------------------------------------------------
    async def handle(self, kind: str, raw: bytes, path: str, start: float | None = None,
                     headers: dict[str, str] | None = None) -> Reply:
        """A chat or completion request body -> its reply. Never raises for a request's fault.
        ``headers``: the request's, for its ``traceparent``."""
        start = time.perf_counter() if start is None else start
        rid = f"{'chatcmpl' if kind == CHAT else 'cmpl'}-{uuid.uuid4().hex}"
        span = self.tracing.start_request(f"POST {path}", headers, {"http.request.method": "POST", "url.path": path,
                                                                     "smoothie.request_id": rid})
        if self.tracing.enabled:
            self._spans[rid] = span
        token = self.tracing.activate(span)
        try:
            return await self._handle(kind, raw, path, start, rid)
        finally:
            self.tracing.deactivate(token)

    async def _handle(self, kind: str, raw: bytes, path: str, start: float, rid: str) -> Reply:
        try:
            req = parse(raw, kind)
            target = self._target(req.model)
        except ApiError as exc:
            self.finish(rid, path, "rejected", exc.status, start, error=exc.message)
            return self._error_reply(exc)
        policy = "direct" if target else self.settings.policy
        call = _Call(rid, path, start, req, policy, generation=self.generation,
                     smoothie=_smoothie(policy, "direct" if target else None))
        try:
            return await (self._single(call, [target]) if target else self._routed(call))
        except ApiError as exc:
            self.finish(rid, path, policy, exc.status, start, call.smoothie, error=exc.message)
            return self._error_reply(exc, call)

    def _target(self, model: str | None) -> str | None:
        """The backend a request names, or None when it is routed; 404 for any other name."""
        if model is None or model in self.settings.routed_names():
            return None
        if self.settings.backend(model):
            return model
        known = ", ".join([*self.settings.routed_names(), *self.names])
        raise ApiError(404, f"The model '{model}' does not exist (this gateway serves: {known})", param="model",
                       code="model_not_found")

    async def _routed(self, call: _Call) -> Reply:
        s = self.settings
        try:
            seq = call.seq = call.smoothie["seq"] = await self._db(self.store.next_sequence)
        except StoreUnavailable as exc:
            raise self._store_down(exc) from None
        self._pin(call)
        handed_over = False  # an explore fan-out that finishes after the response settles itself
        try:
            mode = "fanout" if s.policy == "fanout" else self.router.mode(seq)
            call.smoothie["mode"] = mode
            if mode in ("fanout", "warmup") or (mode == "explore" and s.explore_answer == "smoothie"):
                return await self._fanout(call)
            input_vec = (await self._embed([call.req.text], call.generation))[0] \
                if s.policy in ("local", "adaptive") else None
            if mode == "adaptive":
                unsure, order, est, call.smoothie["uncertainty"] = self.router.adapt(seq, input_vec)
                try:  # restored at a restart, so the policy goes on as if it had not stopped
                    await self._db(self.store.add_score, seq, self.router.uncertainty[seq])
                except StoreUnavailable as exc:
                    log.warning(json.dumps({"event": "score_not_stored", "seq": seq, "error": str(exc)}))
                if unsure:
                    call.smoothie["mode"] = "unsure"
                    return await self._fanout(call, input_vec)
            else:
                order, est = self.router.rank(seq, input_vec)
            call.smoothie["weights"] = est.named_weights() if est is not None else None
            order = self._share_ties(call, order)
            if mode != "explore":
                duel = self._duel(call)
                if not duel:
                    self._settle(seq)  # a single call stores nothing: later requests need not wait for it
                reply = await self._single(call, order)
                if duel and call.smoothie["chosen"] in duel and reply.body is not None:
                    call.judging = True  # the duel's verdicts are seen once judged, like a fan-out's row
                    self._spawn(self._duel_then_settled(seq, call.rid, call.req, call.smoothie["chosen"],
                                                        answer_text(call.req.kind, reply.body), duel))
                return reply
            reply, job = await self._explore(call, order)
            if job is not None:
                if s.store_text == "on":  # off: the request is written nowhere; a restart loses this fan-out
                    try:
                        await self._db(self.store.add_pending, seq, call.rid, job)
                    except StoreUnavailable as exc:  # the fan-out still runs; only a restart would lose it
                        log.warning(json.dumps({"event": "pending_not_stored", "seq": seq, "error": str(exc)}))
                self._hand_over(seq)
                self._spawn(self._background(seq, call.rid, job, input_vec, call.generation))
                handed_over = True
            return reply
        finally:
            self.router.unpin(seq)
            if not handed_over and not call.judging:
                self._settle(seq)

    def _share_ties(self, call: _Call, order: list[str]) -> list[str]:
        """select's (and adaptive's Global) single call when the stored fan-outs cannot tell
        several backends apart (``--contenders``): one of those contenders, among the ones with a
        free slot (in flight plus queued below ``max_concurrency``; else the one whose call would
        end first), so a tie never piles onto one slot-limited backend while the others idle. ``capacity``: the
        best of them when it is among those, else a draw; ``shares``: always a draw, in
        proportion to the shares. Draws are keyed by seed and request number; backends outside
        the set are called only after every contender failed. ``smoothie.among`` records the
        backends with a free slot, so a replay from the server's log decides the same."""
        s = self.settings
        if s.policy not in ("select", "adaptive") or s.contenders <= 0 or call.seq is None:
            return order
        if s.policy == "adaptive" and self.router.rule(call.seq).kind != "global":
            return order
        shares = self.router.contenders(call.seq, s.contenders)
        call.smoothie["contenders"] = shares or None
        self.metrics.contenders.set(len(shares))
        if len(shares) < 2 and self.judge is None:
            return order
        best, spread = next(iter(shares), order[0]), s.contender_spread  # today's single call
        if self.judge is not None:
            among_judged = self._judge_set(call.seq, shares)
            judged = self.router.judged(call.seq, among_judged, s.judge_kind == "peers")
            call.smoothie["decided_by"] = "judge" if judged.decides else "agreement"
            call.smoothie["judged"] = {"among": among_judged, "best": judged.best, "separated": judged.separated,
                                       "overrules": judged.overrules, "verdicts": judged.verdicts,
                                       "attempts": judged.attempts}
            if judged.decides:  # the verdicts rate one backend above agreement's choice: select follows them
                return [judged.best, *[b for b in order if b != judged.best]]
        if len(shares) < 2:
            return order
        seen = self.recorded.get(call.seq) if self.recorded is not None else None
        among = seen.among if seen is not None and seen.among else self._with_capacity(list(shares))
        pick = best if spread == "capacity" and best in among else spread_draw(s.seed, call.seq, among, shares)
        call.smoothie["among"] = among
        return [pick, *[b for b in shares if b != pick], *[b for b in order if b not in shares]]

    def _with_capacity(self, names: list[str]) -> list[str]:
        """``names`` with a free slot now (not cooling down); when none has, the one whose call
        would end first: its calls in flight and queued, plus this one, over its slots, times
        its recent call time (a fast backend's queue can beat a slow backend's)."""
        pool = self.pool
        usable = [b for b in names if not pool.cooling(b)] or list(names)
        busy = {b: pool.in_flight(b) + pool.waiting.get(b, 0) for b in usable}
        slots = {b: self.settings.backend(b).max_concurrency for b in usable}
        free = [b for b in usable if busy[b] < slots[b]]
        if free:
            return free
        recent = getattr(pool, "recent_ms", {})
        return [min(usable, key=lambda b: ((busy[b] + 1) / slots[b] * recent.get(b, 1000.0), usable.index(b)))]

    def _usable(self, order: list[str], call: _Call) -> list[str]:
        """``order`` without backends cooling down (noted in ``failed``), unless every one is."""
        usable = [b for b in order if not self.pool.cooling(b)]
        if not usable:
            return list(order)
        for b in order:
            if b not in usable:
                call.failed(b, self.pool.cooling(b))
                self._count(b, "skipped")
        return usable

    async def _backend(self, name: str, kind: str, body: dict, role: str = "answer",
                       deadline: float | None = None) -> tuple[dict, float]:
        """``pool.call`` in a span of its own (the queue wait is its child; the backend gets its
        ``traceparent``). Every role but ``answer`` is made after its response: it queues behind
        the calls clients wait for."""
        with self.tracing.span(f"backend {name}", CLIENT, {"smoothie.backend": name,
                                                                        "smoothie.role": role}) as span:
            try:
                data, ms = await self.pool.call(name, kind, body, background=role != "answer", deadline=deadline)
            except BackendError as exc:
                set_attributes(span, {"smoothie.outcome": exc.fault, "error.type": str(exc)[:200],
                                      "http.response.status_code": exc.status})
                raise
            usage = usage_of(data) or {}
            set_attributes(span, {"smoothie.outcome": "ok", "smoothie.latency_ms": round(ms, 1),
                                  "gen_ai.usage.input_tokens": usage.get("prompt_tokens"),
                                  "gen_ai.usage.output_tokens": usage.get("completion_tokens")})
            return data, ms

    async def _call(self, call: _Call, name: str, body: dict | None = None) -> dict | None:
        """One backend's answer, or None with the failure noted in ``call``."""
        try:
            data, ms = await self._backend(name, call.req.kind, body or call.req.body)
        except BackendError as exc:
            call.faults[name] = exc
            call.failed(name, str(exc))
            self._count(name, OUTCOME[exc.fault])
            return None
        self._took(call.smoothie, name, ms, data)
        return data

    def _took(self, smoothie: dict, name: str, ms: float, data: dict) -> None:
        usage = usage_of(data)
        smoothie["latency_ms"][name] = round(ms, 1)
        smoothie["usage_by_backend"][name] = usage
        self._count(name, "ok", ms, usage)

    async def _embed(self, texts: list[str], generation: int, urgent: bool = True) -> np.ndarray:
        """Embed on the worker thread; a response waits on ``urgent`` work, which goes before the
        late fan-outs' (so a late fan-out never delays a response). An embedding server that
        fails (after its retries) is a 503 with Retry-After, like a backend whose queue is full;
        one that refuses the texts, a 400 for this request alone; one whose model changed, or
        vectors of an older ``generation`` than the embedder's now, a 503 ``embedding_changed``."""
        changed = ApiError(503, "the embedding model changed while this request was served; retry it",
                           type_="server_error", code="embedding_changed", headers={"Retry-After": "1"})
        try:
            with self.tracing.span("embedding", attributes={"smoothie.texts": len(texts), "smoothie.urgent": urgent}):
                vecs = await asyncio.wrap_future(self.executor.submit(texts, urgent))
        except EmbeddingUnavailable as exc:
            self.metrics.embedding_failures.inc()
            raise ApiError(503, f"embedding is unavailable: {exc}", type_="server_error",
                           code="embedding_unavailable", headers={"Retry-After": "5"}) from None
        except EmbeddingRefused as exc:
            raise ApiError(400, f"{exc}; no other request was affected", code="embedding_refused") from None
        except EmbeddingChanged as exc:
            if generation == self.generation:
                await self._embedder_changed(exc.old, exc.new)
            raise changed from None
        if generation != self.generation:
            raise changed
        return vecs

    def _for_embedding(self, kind: str, response: dict) -> str:
        text = answer_text(kind, response)
        return clean_generation(text) if self.settings.clean else text

    async def _record(self, row: Fanout, generation: int) -> None:
        """Store a fan-out, then add it to the router (unless the embedder changed meanwhile)."""
        if self.settings.store_text == "off":
            row = without_text(row)
        with self.tracing.span("store write", attributes={"smoothie.seq": row.seq, "smoothie.late": row.late}):
            dropped = await self._db(self.store.add, row, self._identities[generation])
        if generation != self.generation:
            return
        self.router.drop(dropped)
        self.router.add(row)

    async def _fanout(self, call: _Call, input_vec: np.ndarray | None = None) -> Reply:
        """Ask every usable backend at once; return Smoothie's pick among the answers (by the
        estimator ``--fanout_rule`` names, reported in ``smoothie.estimator``)."""
        req, seq = call.req, call.seq
        called = self._usable(self.names, call)
        call.smoothie["called"] = called
        # the input is embedded while the backends answer: with real backends its cost is hidden in their time
        early = asyncio.ensure_future(self._embed([req.text], call.generation)) if input_vec is None else None
        try:
            results = await asyncio.gather(*(self._call(call, b) for b in called))
            answers = {b: data for b, data in zip(called, results) if data is not None}
            if not answers:
                raise self._no_answer(call)
            names = list(answers)
            texts = [self._for_embedding(req.kind, answers[b]) for b in names]
            by_name = dict(zip(names, await self._embed(texts, call.generation)))
            if early is not None:
                input_vec = (await early)[0]
        finally:
            if early is not None and not early.done():
                early.cancel()
            if early is not None and early.done() and not early.cancelled():
                early.exception()  # retrieved: a failure already answered (or the request failed first)
        chosen, est = self.router.choose(seq, by_name, input_vec)
        rule = self.router.rule(seq)
        call.smoothie["estimator"] = rule.label
        try:
            await self._record(Fanout(seq, call.rid, req.text, input_vec,
                                      {b: answer_text(req.kind, answers[b]) for b in names}, by_name), call.generation)
        except StoreUnavailable as exc:
            raise self._store_down(exc) from None
        contenders = self._to_judge(seq)
        if contenders:
            call.judging = True  # its row is seen with its verdicts, once judged
            self._spawn(self._judged_then_settled(seq, call.rid, req.text,
                                                  {b: answer_text(req.kind, answers[b]) for b in names}, contenders))
        weights = est.named_weights() if est is not None else None
        if weights is not None and len(names) < len(weights):  # the stored Global weights, of those that answered
            weights = {b: w for b, w in weights.items() if b in answers} or None
        call.smoothie.update(chosen=chosen, weights=weights)
        self._explain(call, chosen)
        return self._answer(call, answers[chosen], chosen)

    async def _explore(self, call: _Call, order: list[str]) -> tuple[Reply, dict | None]:
        """Answer with the policy's pick now; the job that fans out to the others afterwards."""
        req = call.req
        for b in self._usable(order, call):
            call.smoothie["called"].append(b)
            data = await self._call(call, b)
            if data is None:
                if call.faults[b].fault == "queue":
                    break
                continue
            call.smoothie["chosen"] = b
            self._explain(call, b)
            others = [o for o in self.names if o != b and o not in call.smoothie["failed"]]
            job = {"kind": req.kind, "body": req.body, "text": req.text, "answered": {b: data}, "others": others,
                   "judge": self._to_judge(call.seq)}  # decided now, as the request saw the rows
            return self._answer(call, data, b), job
        raise self._no_answer(call)

    async def _background(self, seq: int, rid: str, job: dict, input_vec: np.ndarray | None = None,
                          generation: int | None = None) -> None:
        """The rest of an explore fan-out, after its response: call the other backends, embed,
        store the row (which clears the pending job). Cancelled at shutdown, it stays pending."""
        # a trace of its own (its request's has ended), linked to the request's span when there is one
        with self.tracing.span("explore fan-out", attributes={"smoothie.seq": seq, "smoothie.request_id": rid},
                               links=self.tracing.link(self.tracing.current_context()), root=True):
            await self._explore_rest(seq, rid, job, input_vec, generation)

    async def _explore_rest(self, seq: int, rid: str, job: dict, input_vec: np.ndarray | None,
                            generation: int | None) -> None:
        kind = job["kind"]
        generation = self.generation if generation is None else generation
        try:
            self.metrics.pending.set(len(self._late))
            answers = dict(job["answered"])
            smoothie = _smoothie(self.settings.policy, "explore")
            results = await asyncio.gather(*(self._backend(b, kind, job["body"], role="explore")
                                             for b in job["others"]),
                                           return_exceptions=True)
            for b, result in zip(job["others"], results):
                if isinstance(result, BackendError):
                    self._count(b, OUTCOME[result.fault])
                elif isinstance(result, BaseException):
                    raise result
                else:
                    answers[b] = result[0]
                    self._took(smoothie, b, result[1], result[0])
            names = [b for b in self.names if b in answers]
            texts = [self._for_embedding(kind, answers[b]) for b in names]
            vecs = await self._embed(texts if input_vec is not None else [job["text"], *texts], generation,
                                     urgent=False)
            if input_vec is None:
                input_vec, vecs = vecs[0], vecs[1:]
            await self._record(Fanout(seq, rid, job["text"], input_vec, {b: answer_text(kind, answers[b]) for b in names},
                                      dict(zip(names, vecs)), late=True), generation)
            if job.get("judge"):
                await self._judge_fanout(seq, rid, job["text"], {b: answer_text(kind, answers[b]) for b in names},
                                         job["judge"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a lost fan-out must not take the gateway down
            with contextlib.suppress(StoreUnavailable):
                await self._db(self.store.drop_pending, seq)
            log.error(self.redact(json.dumps({"event": "explore_fanout_failed", "id": rid, "seq": seq,
                                              "error": f"{type(exc).__name__}: {exc}"[:300]})))
        finally:
            self._settle(seq)
            self.metrics.pending.set(len(self._late))

    async def _single(self, call: _Call, order: list[str]) -> Reply:
        """Ask ``order``'s backends one at a time until one answers (streamed or not). A backend
        whose queue is full ends the search: 503, not a worse backend's answer."""
        candidates = order if call.policy == "direct" else self._usable(order, call)
        for b in candidates:
            call.smoothie["called"].append(b)
            if call.req.stream:
                reply = await self._open_stream(call, b)
            else:
                data = await self._call(call, b)
                reply = None
                if data is not None:
                    call.smoothie["chosen"] = b
                    self._explain(call, b)
                    reply = self._answer(call, data, b)
            if reply is not None:
                return reply
            if call.faults[b].fault == "queue":
                break
        raise self._no_answer(call)

    # -- answers ---------------------------------------------------------------------------------
    def _explain(self, call: _Call, chosen: str) -> None:
        """Why the answer is not the best-ranked backend's: each backend the visible Global
        estimate ranks above ``chosen`` that gave no answer, and a flag when that left only a
        backend in the worse half of the ranking."""
        if call.policy == "direct":
            return
        est = self.router.global_estimate(call.seq)
        if est is None:
            return
        ranking = self.router.ranked(est)
        above = ranking[: ranking.index(chosen)]
        failed = call.smoothie["failed"]
        passed = {b: failed[b] for b in above if b in failed}
        call.smoothie["passed_over"] = passed
        if passed and len(passed) == len(above) and ranking.index(chosen) >= len(ranking) / 2:
            call.smoothie["degraded"] = (f"{chosen} is ranked {ranking.index(chosen) + 1} of {len(ranking)} by the "
                                         f"stored Global estimate; every better-ranked backend gave no answer")

    def _no_answer(self, call: _Call) -> ApiError:
        """The error when no backend answered: the backends' own 4xx when every one rejected the
        request, 503 with Retry-After when a queue was full, else 502."""
        failed = call.smoothie["failed"]
        detail = "; ".join(f"{b}: {e}" for b, e in failed.items())
        faults = [call.faults.get(b) for b in failed]
        extra = {"smoothie": call.smoothie}
        if faults and all(f is not None and f.fault == "request" for f in faults):
            status = Counter(f.status for f in faults).most_common(1)[0][0]
            return ApiError(status, f"every backend rejected the request ({detail})", code="rejected_by_backends",
                            extra=extra)
        queued = [b for b in failed if call.faults.get(b) is not None and call.faults[b].fault == "queue"]
        if queued:
            wait = min(self.pool.retry_after(b) for b in queued)
            return ApiError(503, f"the backends are busy; retry in {wait} s ({detail})", type_="server_error",
                            code="backends_busy", extra=extra, headers={"Retry-After": str(wait)})
        return ApiError(502, f"no backend answered ({detail})", type_="upstream_error", code="backends_failed",
                        extra=extra)


