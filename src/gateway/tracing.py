"""OpenTelemetry traces of the gateway's requests (``--otel_endpoint``, OTLP over HTTP).

One span per request (SERVER), with children for the queue wait, each backend call (CLIENT), the
embedding, the store write and, as a trace of its own linked to its request, the explore fan-out
that runs after the response. Incoming W3C ``traceparent`` headers are honoured: the request span
is their child, and the backend calls carry the trace on. Without ``--otel_endpoint`` nothing is
recorded, but an incoming ``traceparent`` is still passed on to the backends unchanged, so a
trace that started before the gateway goes on after it.

The SDK's own ``TracerProvider`` is kept per gateway (never the process-global one), so two
gateways in one process (tests, replay) do not share exporters. Attributes carry names, numbers
and outcomes only, never prompt or answer text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
SERVICE_NAME = "smoothie-gateway"
CLIENT = trace.SpanKind.CLIENT


def error_status(description: str) -> trace.Status:
    return trace.Status(trace.StatusCode.ERROR, description[:200])


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for ``--otel_endpoint``: a collector's base URL (as
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` takes it, e.g. http://127.0.0.1:4318) gets ``/v1/traces``;
    a URL that already names a path is used as it is."""
    path = urlsplit(endpoint).path
    return endpoint if path not in ("", "/") else endpoint.rstrip("/") + "/v1/traces"


class Tracing:
    """The gateway's tracer. ``endpoint``: export over OTLP/HTTP in batches; ``exporter``: an
    SDK span exporter that receives every span as it ends (tests: ``InMemorySpanExporter``).
    Neither: ``enabled`` is False and ``span()`` records nothing."""

    def __init__(self, endpoint: str | None = None, exporter=None, service: str = SERVICE_NAME):
        self.provider = None
        self.enabled = endpoint is not None or exporter is not None
        if not self.enabled:
            self.tracer = trace.NoOpTracer()
            return
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        if exporter is not None:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        if endpoint is not None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint)),
                                                                schedule_delay_millis=1000))
        self.tracer = self.provider.get_tracer("src.gateway")

    # -- request spans (started and ended in different places: a stream ends after its reply) --
    def start_request(self, name: str, headers: Mapping[str, str] | None, attributes: dict) -> trace.Span:
        """The request's span, a child of the caller's ``traceparent`` when one was sent. With
        tracing off: the caller's span context itself (non-recording), so that it is passed on."""
        parent = _PROPAGATOR.extract(dict(headers or {}))
        if not self.enabled:
            return trace.get_current_span(parent)
        return self.tracer.start_span(name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes)

    @staticmethod
    def activate(span: trace.Span) -> object:
        """Make ``span`` the current one (for child spans and propagation); returns the token
        that ``deactivate`` takes."""
        return otel_context.attach(trace.set_span_in_context(span))

    @staticmethod
    def deactivate(token: object) -> None:
        otel_context.detach(token)

    @contextlib.contextmanager
    def span(self, name: str, kind: trace.SpanKind = trace.SpanKind.INTERNAL, attributes: dict | None = None,
             links: list | None = None, root: bool = False) -> Iterator[trace.Span | None]:
        """A child of the current span (or, ``root``, the start of a trace of its own); yields
        None with tracing off. An exception ends it with an error status."""
        if not self.enabled:
            yield None
            return
        ctx = otel_context.Context() if root else None
        with self.tracer.start_as_current_span(name, context=ctx, kind=kind, attributes=attributes or {},
                                               links=links or ()) as span:
            yield span

    def start_child(self, name: str, kind: trace.SpanKind, attributes: dict) -> trace.Span | None:
        """A child of the current span that outlives this scope (a relayed stream's backend
        call ends with the stream); None with tracing off. ``end`` ends it."""
        return self.tracer.start_span(name, kind=kind, attributes=attributes) if self.enabled else None

    @staticmethod
    def end(span: trace.Span | None, attributes: dict) -> None:
        if span is not None:
            set_attributes(span, attributes)
            span.end()

    @staticmethod
    def current_context() -> trace.SpanContext:
        return trace.get_current_span().get_span_context()

    @staticmethod
    def link(span_context: trace.SpanContext) -> list:
        return [trace.Link(span_context)] if span_context.is_valid else []

    @staticmethod
    def inject(headers: dict[str, str]) -> None:
        """Add the current span's ``traceparent`` (if any) to an outgoing request's headers."""
        _PROPAGATOR.inject(headers)

    def shutdown(self) -> None:
        """Export what is still batched (a gateway's shutdown)."""
        if self.provider is not None:
            self.provider.shutdown()


def set_attributes(span: trace.Span | None, attributes: dict) -> None:
    """Set the attributes whose value is not None (OpenTelemetry takes no nulls)."""
    if span is None or not span.is_recording():
        return
    span.set_attributes({k: v for k, v in attributes.items() if v is not None})
