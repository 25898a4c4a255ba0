"""What the gateway tells operators: OpenTelemetry traces (the SDK's in-memory exporter in
process, and a real OTLP/HTTP receiver over the wire) and the ``traceparent`` it passes on.

Before this release a request's path (embedding, each backend call, the queue wait, the store
write, the late explore fan-out) could not be followed in a tracing system: no span was made and
an incoming ``traceparent`` stopped at the gateway."""

from __future__ import annotations

import sys
import time

import httpx
import pytest
from gateway_servers import ROOT, Gateway, free_port

NAMES = ["a", "b", "c"]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def flags(scripted, **limits) -> list[str]:
    return [f"{b}=http://127.0.0.1:{scripted.port}/{b}/v1" + (f",max_concurrency={limits[b]}" if b in limits else "")
            for b in NAMES]


def backend_traceparents(scripted, name: str) -> list[str | None]:
    return httpx.get(f"http://127.0.0.1:{scripted.port}/{name}/stats").json()["traceparents"]


def in_process(scripted, tmp_path, exporter, **values):
    """The gateway's FastAPI app in this process, its spans going to ``exporter``."""
    from fastapi.testclient import TestClient

    from src.gateway import config
    from src.gateway.app import create_app
    from src.gateway.embedding import build_embedder
    from src.gateway.tracing import Tracing

    settings = config.load(None, {"store": str(tmp_path / "s.sqlite"), "embedding_model": "all-minilm-l6-v2",
                                  "embedding_precision": "fp32", **values}, flags(scripted))
    return TestClient(create_app(settings, build_embedder(settings, persist=False), tracing=Tracing(exporter=exporter)))


def test_a_fanout_request_is_one_span_with_its_path_as_children_and_the_trace_goes_on_to_the_backends(
        scripted, tmp_path):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    with in_process(scripted, tmp_path, exporter) as client:
        r = client.post("/v1/chat/completions", headers={"traceparent": TRACEPARENT},
                        json={"messages": [{"role": "user", "content": "trace me"}]})
    assert r.status_code == 200
    spans = exporter.get_finished_spans()
    (request,) = [s for s in spans if s.kind == SpanKind.SERVER]
    # the caller's trace goes on: same trace id, the caller's span is the parent
    assert format(request.context.trace_id, "032x") == TRACE_ID
    assert format(request.parent.span_id, "016x") == PARENT_ID
    assert request.name == "POST /v1/chat/completions"
    attrs = request.attributes
    assert attrs["http.response.status_code"] == 200 and attrs["smoothie.mode"] == "fanout"
    assert attrs["smoothie.chosen"] == r.json()["smoothie"]["chosen"]
    assert attrs["smoothie.seq"] == r.json()["smoothie"]["seq"] and attrs["smoothie.calls"] == 3
    assert attrs["gen_ai.usage.output_tokens"] == r.json()["usage"]["completion_tokens"]
    children = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == request.context.span_id}
    assert {f"backend {b}" for b in NAMES} | {"embedding", "store write"} <= set(children)
    for b in NAMES:
        call = children[f"backend {b}"]
        assert call.kind == SpanKind.CLIENT and call.attributes["smoothie.backend"] == b
        assert call.attributes["smoothie.outcome"] == "ok" and call.attributes["gen_ai.usage.output_tokens"] > 0
        # the queue wait is the call's child; the backend received the call's span as its parent
        assert any(s.name == "queue wait" and s.parent.span_id == call.context.span_id for s in spans)
        sent = backend_traceparents(scripted, b)[-1]
        assert sent == f"00-{TRACE_ID}-{format(call.context.span_id, '016x')}-01"


def test_the_late_explore_fanout_is_a_trace_of_its_own_linked_to_its_request(scripted, tmp_path):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    with in_process(scripted, tmp_path, exporter, policy="select", warmup=3, explore=1.0, lag=0) as client:
        replies = [client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": f"q{i}"}]})
                   for i in range(5)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(s.name == "explore fan-out"
                                                      for s in exporter.get_finished_spans()):
            time.sleep(0.1)
    assert all(r.status_code == 200 for r in replies)
    modes = [r.json()["smoothie"]["mode"] for r in replies]
    assert "explore" in modes, modes
    spans = exporter.get_finished_spans()
    requests = {s.attributes["smoothie.seq"]: s for s in spans if s.kind == SpanKind.SERVER}
    explores = [s for s in spans if s.name == "explore fan-out"]
    assert explores
    for fan in explores:
        request = requests[fan.attributes["smoothie.seq"]]
        assert fan.parent is None  # a root: its request's span ended with the response
        assert [link.context.span_id for link in fan.links] == [request.context.span_id]
        assert request.attributes["smoothie.mode"] == "explore" and request.attributes["smoothie.calls"] == 1
        inside = [s for s in spans if s.context.trace_id == fan.context.trace_id and s.name.startswith("backend ")]
        assert len(inside) == 2  # the two backends the answer did not come from, called after the response


def test_without_otel_the_callers_traceparent_still_reaches_the_backends(scripted, tmp_path):
    gw = Gateway(tmp_path, "plain", flags(scripted), "--store", str(tmp_path / "p.sqlite")).start()
    try:
        r = httpx.post(gw.url + "/v1/chat/completions", headers={"traceparent": TRACEPARENT}, timeout=60,
                       json={"model": "b", "messages": [{"role": "user", "content": "pass it on"}]})
    finally:
        gw.stop()
    assert r.status_code == 200
    assert backend_traceparents(scripted, "b")[-1] == TRACEPARENT


def test_spans_reach_a_real_otlp_http_receiver(scripted, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from otlp_receiver import Receiver, tree

    port = free_port()
    receiver = Receiver(port).start()
    gw = Gateway(tmp_path, "otel", flags(scripted), "--store", str(tmp_path / "o.sqlite"),
                 "--otel_endpoint", f"http://127.0.0.1:{port}").start()
    try:
        r = httpx.post(gw.url + "/v1/chat/completions", headers={"traceparent": TRACEPARENT}, timeout=60,
                       json={"messages": [{"role": "user", "content": "over the wire"}]})
        assert r.status_code == 200
        spans = receiver.wait_for("POST ")
    finally:
        gw.stop()
        receiver.shutdown()
    assert set(receiver.paths) == {"/v1/traces"} and set(receiver.content_types) == {"application/x-protobuf"}
    (request,) = [s for _, s in spans if s.name == "POST /v1/chat/completions"]
    assert request.trace_id.hex() == TRACE_ID and request.parent_span_id.hex() == PARENT_ID
    attrs = {a.key: a.value for a in request.attributes}
    assert attrs["smoothie.seq"].int_value == r.json()["smoothie"]["seq"]
    assert attrs["smoothie.chosen"].string_value == r.json()["smoothie"]["chosen"]
    assert spans[0][0]["service.name"] == "smoothie-gateway"
    mine = [s for _, s in spans if s.trace_id.hex() == TRACE_ID]
    assert {"backend a", "backend b", "backend c", "embedding", "store write", "queue wait"} <= {s.name for s in mine}
    assert not any("over the wire" in str(s) for s in mine)  # the prompt never leaves in a span
    printed = tree(mine)
    print(printed)
    assert printed.splitlines()[1].strip().startswith("POST /v1/chat/completions")


@pytest.mark.parametrize("bad", ["localhost:4318", "ftp://x"])
def test_a_bad_otel_endpoint_is_one_line_naming_the_flag(bad, scripted):
    import subprocess

    out = subprocess.run([sys.executable, "-m", "src.serve", *(a for b in flags(scripted) for a in ("--backend", b)),
                          "--otel_endpoint", bad], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--otel_endpoint" in out.stderr and "Traceback" not in out.stderr
