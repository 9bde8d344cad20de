"""A tiny OTLP/HTTP collector on loopback: what the tracing test and the bench point the
function processes at (`AGENTGRAPH_TRACE=otlp`, `OTEL_EXPORTER_OTLP_ENDPOINT=collector.url`).

It accepts `POST /v1/traces` and `/v1/metrics` (protobuf, as the SDK's OTLP/HTTP exporters
send them), decodes them with `opentelemetry-proto` and keeps every span (with its
process's resource) and every metric name. `wait_for` polls what was received; nothing
sleeps to synchronise.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from emulator.processes import LOOPBACK


@dataclass(frozen=True)
class CollectedSpan:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: int  # OTLP: 1 internal, 2 server, 3 client, 4 producer, 5 consumer
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(hash=False)
    resource: dict[str, Any] = field(hash=False)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def pid(self) -> Any:
        return self.resource.get("process.pid")


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, which) if which else None


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


class OtlpCollector:
    """`with OtlpCollector() as collector:`; `collector.url` is the OTLP endpoint."""

    def __init__(self) -> None:
        self.spans: list[CollectedSpan] = []
        self.metric_names: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> OtlpCollector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self) -> list[CollectedSpan]:
        with self._lock:
            return list(self.spans)

    def clear(self) -> None:
        with self._lock:
            self.spans.clear()
            self.metric_names.clear()

    def wait_for(
        self, done: Callable[[list[CollectedSpan]], bool], timeout: float, what: str
    ) -> list[CollectedSpan]:
        deadline = time.monotonic() + timeout
        while True:
            spans = self.received()
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout} s ({len(spans)} spans received)")
            time.sleep(0.05)  # polling the collector's buffer, not synchronising

    def _traces(self, body: bytes) -> None:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    spans.append(
                        CollectedSpan(
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex() or None,
                            span.name,
                            span.kind,
                            span.start_time_unix_nano,
                            span.end_time_unix_nano,
                            _attributes(span.attributes),
                            resource,
                        )
                    )
        with self._lock:
            self.spans.extend(spans)

    def _metrics(self, body: bytes) -> None:
        request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
        names = {
            metric.name
            for rm in request.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        }
        with self._lock:
            self.metric_names |= names

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    collector._traces(body)
                    answer = trace_service_pb2.ExportTraceServiceResponse()
                elif self.path == "/v1/metrics":
                    collector._metrics(body)
                    answer = metrics_service_pb2.ExportMetricsServiceResponse()  # type: ignore[assignment]
                else:
                    self.send_error(404)
                    return
                payload = answer.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler
