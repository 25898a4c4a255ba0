"""Answers on their way to the client: a chosen answer as JSON or as a buffered stream, and a
backend's stream relayed as it comes (usage counted when the backend sends none, a break after
the first event ended with an error event, a client that leaves logged as ``client_closed``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from src.gateway.backends import OUTCOME, BackendError
from src.gateway.protocol import (
    USAGE_COUNTED,
    counted_usage,
    delta_text,
    error_event,
    sse,
    stream_chunks,
    usage_chunk,
    usage_of,
    usage_sum,
)
from src.gateway.tracing import CLIENT

if TYPE_CHECKING:
    from src.gateway.core import _Call


@dataclass
class Reply:
    """What the HTTP layer sends: a JSON body, or server-sent events (already framed)."""

    status: int
    body: dict | None = None
    events: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Relay:
    """The core's answers (a mixin of ``Core``)."""

    def _usage(self, call: _Call) -> dict | None:
        by_backend = call.smoothie["usage_by_backend"]
        return usage_sum(by_backend.values()) if by_backend else None

    def _answer(self, call: _Call, data: dict, chosen: str) -> Reply:
        """The chosen answer as JSON, or as a buffered stream of chunks (a fan-out's answer is
        known only once every backend has answered; an explore request's pick is not streamed)."""
        out = {**data, "id": call.rid, "model": chosen, "smoothie": call.smoothie}
        usage = self._usage(call)
        if usage is not None:
            out["usage"] = usage
        self.finish(call.rid, call.path, call.policy, 200, call.start, call.smoothie)
        if not call.req.stream:
            return Reply(200, out, headers=self._decision_headers(call))
        chunks = stream_chunks(call.req.kind, out, call.smoothie, call.req.include_usage)

        async def events():
            for chunk in chunks:
                yield sse(chunk)
            yield sse("[DONE]")

        return Reply(200, events=events(), headers=self._decision_headers(call))

    async def _open_stream(self, call: _Call, name: str) -> Reply | None:
        """A backend's stream relayed as it comes, once its first event has arrived (before
        that, a failure falls back to the next backend). A break later ends the stream with an
        error event, as OpenAI's API sends one, so SDKs raise; it is logged and counted as 502."""
        stack = AsyncExitStack()
        span = self.tracing.start_child(f"backend {name}", CLIENT, {"smoothie.backend": name, "smoothie.role": "answer",
                                                                   "smoothie.stream": True})
        token = self.tracing.activate(span) if span is not None else None
        try:
            upstream = await stack.enter_async_context(self.pool.stream(name, call.req.kind, call.req.body))
            events = upstream.events()
            first = await anext(events, None)
        except BackendError as exc:
            await stack.aclose()
            call.faults[name] = exc
            call.failed(name, str(exc))
            self._count(name, OUTCOME[exc.fault])
            self.tracing.end(span, {"smoothie.outcome": exc.fault, "error.type": str(exc)[:200]})
            return None
        except BaseException:
            await stack.aclose()
            self.tracing.end(span, {"smoothie.outcome": "error"})
            raise
        finally:
            if token is not None:
                self.tracing.deactivate(token)
        call.smoothie["chosen"] = name
        self._explain(call, name)

        async def relay():
            status, error, usage, pieces = 200, None, None, 0
            try:
                event = first
                head = True
                while event is not None:
                    event.update(id=call.rid, model=name)
                    if head:
                        event["smoothie"] = call.smoothie
                        head = False
                    if isinstance(event.get("usage"), dict):
                        usage = usage_of(event)
                    pieces += bool(delta_text(event))
                    yield sse(event)
                    event = await anext(events, None)
                if usage is None:  # the backend sent none (llama.cpp does not): count what was streamed
                    usage = counted_usage(pieces)
                    call.smoothie["usage_counted"] = USAGE_COUNTED
                self._took(call.smoothie, name, upstream.ms or 0.0, {"usage": usage})
                if call.req.include_usage and call.smoothie.get("usage_counted"):
                    yield sse(usage_chunk(call.req.kind, call.rid, name, usage, call.smoothie))
                yield sse("[DONE]")
            except BackendError as exc:
                status, error = 502, f"{name} broke off mid-stream ({exc})"
                call.failed(name, str(exc))
                self._count(name, "broken")
                yield sse(error_event(error))
            except (GeneratorExit, asyncio.CancelledError):  # the client went away mid-stream
                status, error = 499, "client_closed: the client closed the stream before its end"
                call.smoothie["usage_by_backend"][name] = counted_usage(pieces)
                self._count(name, "client_closed", usage=counted_usage(pieces))
                raise
            finally:
                await stack.aclose()
                used = call.smoothie["usage_by_backend"].get(name) or {}
                self.tracing.end(span, {"smoothie.outcome": "ok" if status == 200 else error,
                                        "smoothie.latency_ms": call.smoothie["latency_ms"].get(name),
                                        "gen_ai.usage.input_tokens": used.get("prompt_tokens"),
                                        "gen_ai.usage.output_tokens": used.get("completion_tokens")})
                self.finish(call.rid, call.path, call.policy, status, call.start, call.smoothie, error=error)

        return Reply(200, events=relay(), headers=self._decision_headers(call))
