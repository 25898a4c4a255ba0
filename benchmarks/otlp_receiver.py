"""A minimal OpenTelemetry OTLP/HTTP trace receiver that prints each trace as a tree: enough to
see what ``src.serve --otel_endpoint`` exports without running a collector.

    python benchmarks/otlp_receiver.py 4318     # then: python -m src.serve ... --otel_endpoint http://127.0.0.1:4318

It decodes each export with the protocol's own protobuf types (``opentelemetry-proto``) and, a
second after a trace's last span arrived, prints it: one line a span, children indented, with
its duration and the attributes an operator filters by. The tests use ``Receiver`` too.
"""

from __future__ import annotations

import http.server
import sys
import threading
import time

SHOWN = ("smoothie.seq", "smoothie.mode", "smoothie.chosen", "smoothie.calls", "smoothie.backend", "smoothie.outcome",
         "smoothie.texts", "smoothie.urgent", "http.response.status_code", "gen_ai.usage.input_tokens",
         "gen_ai.usage.output_tokens")


def _value(v):
    kind = v.WhichOneof("value")
    return list(x.string_value for x in v.array_value.values) if kind == "array_value" else getattr(v, kind)


class Receiver(http.server.ThreadingHTTPServer):
    """Listens on 127.0.0.1:``port``; ``spans`` holds (resource attributes, span) for every span
    received, ``paths`` and ``content_types`` what each export was sent to and as."""

    def __init__(self, port: int):
        self.spans: list[tuple[dict, object]] = []
        self.paths: list[str] = []
        self.content_types: list[str] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def start(self) -> Receiver:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def wait_for(self, name_prefix: str, timeout: float = 20.0) -> list:
        """The spans received once one whose name starts with ``name_prefix`` has arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if any(s.name.startswith(name_prefix) for _, s in self.spans):
                    return list(self.spans)
            time.sleep(0.1)
        return list(self.spans)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        message = ExportTraceServiceRequest()
        message.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.paths.append(self.path)
            self.server.content_types.append(self.headers.get("Content-Type"))
            for res in message.resource_spans:
                resource = {a.key: _value(a.value) for a in res.resource.attributes}
                self.server.spans.extend((resource, span) for scope in res.scope_spans for span in scope.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


def tree(spans: list) -> str:
    """One trace's spans as an indented tree, earliest first; links named after the span."""
    by_parent: dict[bytes, list] = {}
    ids = {s.span_id for s in spans}
    for s in sorted(spans, key=lambda s: s.start_time_unix_nano):
        by_parent.setdefault(s.parent_span_id if s.parent_span_id in ids else b"", []).append(s)
    lines = []

    def walk(span, depth: int) -> None:
        attrs = {a.key: _value(a.value) for a in span.attributes}
        shown = " ".join(f"{k.split('.')[-1]}={attrs[k]}" for k in SHOWN if k in attrs)
        links = "".join(f" (linked to span {link.span_id.hex()})" for link in span.links)
        ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
        lines.append(f"{'  ' * depth}{span.name:<{40 - 2 * depth}} {ms:8.1f} ms  {shown}{links}  "
                     f"[span {span.span_id.hex()}]")
        for child in by_parent.get(span.span_id, []):
            walk(child, depth + 1)

    for root in by_parent.get(b"", []):
        head = f"trace {root.trace_id.hex()}" + (f", parent span {root.parent_span_id.hex()} (the caller's)"
                                                 if root.parent_span_id else "")
        lines.append(head)
        walk(root, 1)
    return "\n".join(lines)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
    receiver = Receiver(port).start()
    print(f"OTLP/HTTP receiver on http://127.0.0.1:{port}/v1/traces; traces print a second after their last span",
          flush=True)
    printed = 0
    while True:
        time.sleep(1.0)
        with receiver.lock:
            new = receiver.spans[printed:]
            printed = len(receiver.spans)
        by_trace: dict[bytes, list] = {}
        for _, span in new:
            by_trace.setdefault(span.trace_id, []).append(span)
        for spans in by_trace.values():
            print(tree(spans) + "\n", flush=True)


if __name__ == "__main__":
    main()
