"""An OTLP/HTTP collector on loopback for tests: every export decoded with opentelemetry-proto."""
from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def value(any_value: AnyValue) -> object:
    """An attribute's value as Python (string, int, float or bool)."""
    return getattr(any_value, any_value.WhichOneof("value"))


def attributes(pairs: list[KeyValue]) -> dict[str, object]:
    return {pair.key: value(pair.value) for pair in pairs}


@dataclass
class ReceivedSpan:
    span: Span
    resource: dict[str, object]
    scope: str

    @property
    def attributes(self) -> dict[str, object]:
        return attributes(self.span.attributes)


class OtlpReceiver:
    """POST /v1/traces and /v1/metrics, as a collector answers them; bodies and decoded data kept."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.spans: list[ReceivedSpan] = []
        self.metrics: list[Metric] = []
        self.changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(415)
                    return
                answer = receiver.receive(self.path, body)
                if answer is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        return Handler

    def receive(self, path: str, body: bytes) -> bytes | None:
        if path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            found = [
                ReceivedSpan(span, attributes(resource_spans.resource.attributes), scope_spans.scope.name)
                for resource_spans in request.resource_spans
                for scope_spans in resource_spans.scope_spans
                for span in scope_spans.spans
            ]
            answer = ExportTraceServiceResponse().SerializeToString()
        elif path == "/v1/metrics":
            request = ExportMetricsServiceRequest.FromString(body)
            found = [
                metric
                for resource_metrics in request.resource_metrics
                for scope_metrics in resource_metrics.scope_metrics
                for metric in scope_metrics.metrics
            ]
            answer = ExportMetricsServiceResponse().SerializeToString()
        else:
            return None
        with self.changed:
            self.bodies.append(body)
            (self.spans if path == "/v1/traces" else self.metrics).extend(found)
            self.changed.notify_all()
        return answer

    def wait_for_spans(self, count: int, timeout: float = 15.0) -> list[ReceivedSpan]:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.spans) >= count, timeout):
                raise AssertionError(f"{count} span(s) did not arrive within {timeout} s: {len(self.spans)}")
            return list(self.spans)

    def latest_metric(self, name: str) -> Metric:
        with self.changed:
            for metric in reversed(self.metrics):
                if metric.name == name:
                    return metric
        raise AssertionError(f"no metric {name!r} arrived")
