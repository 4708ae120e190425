"""OpenTelemetry export: a span and the gen_ai.client.* metrics for every stored request log.

Off until OTEL_EXPORTER_OTLP_ENDPOINT is set. Spans are made from the entries a batch stored (the
batch_recorded signal: the proxy's flusher thread, the ingest API), never on the proxy's event loop, with
each request's own start and end times; a proxied one continues the caller's W3C traceparent. The SDK
exports in the background: a BatchSpanProcessor with a bounded queue and a PeriodicExportingMetricReader;
what they drop (queue full, collector down) is counted in OTEL_DROPPED. Providers are built per process
on first use (and again after a fork), so many web processes each export their own.
"""
from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlsplit

from django.conf import settings
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter

from together_dash.proxy.metrics import endpoint_label
from together_dash.traffic.entries import LogEntry

PROVIDER_NAME = "together_ai"  # gen_ai.provider.name for Together AI (not in the spec's list yet)
DEFAULT_SERVICE_NAME = "together-dash"
SCOPE = "together_dash"
# The spec's advisory buckets (GenAI semantic conventions v1.37, gen_ai.client.* metrics).
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
OPERATIONS = {
    "chat/completions": "chat", "completions": "text_completion", "embeddings": "embeddings",
    "images/generations": "generate_content",
}
MAX_CONTENT_CHARS = 65536
# At exit, what is still queued gets this long to go out (a collector that is down must not hold the exit).
EXIT_FLUSH_MILLIS = 3000
Attributes = dict[str, object]

OTEL_DROPPED = Counter(
    "together_dash_otel_dropped_total",
    "OpenTelemetry spans and metric exports dropped: the export queue was full or the collector failed.",
    ["signal", "reason"],
)


class CountingSpanExporter(SpanExporter):
    """The OTLP exporter, counting the spans of every export that failed (the SDK drops them)."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.exporter.export(spans)
        except Exception:
            OTEL_DROPPED.labels("spans", "export_failed").inc(len(spans))
            raise
        if result is not SpanExportResult.SUCCESS:
            OTEL_DROPPED.labels("spans", "export_failed").inc(len(spans))
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class CountingQueue(collections.deque):
    """The span processor's bounded queue, counting each span a full queue pushes out, exactly.

    The SDK checks for a full queue and appends in two steps, so its own count races with the export
    thread's pops; here both hold one lock (uncontended but for that moment).
    """

    def __init__(self, maxlen: int) -> None:
        super().__init__((), maxlen)
        self._lock = threading.Lock()

    def appendleft(self, item: object) -> None:
        with self._lock:
            if len(self) == self.maxlen:
                OTEL_DROPPED.labels("spans", "queue_full").inc()
            super().appendleft(item)

    def pop(self) -> object:
        with self._lock:
            return super().pop()


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's BatchSpanProcessor (bounded by OTEL_BSP_MAX_QUEUE_SIZE) with a CountingQueue."""

    def __init__(self, exporter: SpanExporter) -> None:
        super().__init__(exporter)
        batch = self._batch_processor
        batch._queue = CountingQueue(batch._max_queue_size)


class CountingMetricExporter(MetricExporter):
    """The OTLP metric exporter, counting failed exports (each one a period's points lost)."""

    def __init__(self, exporter: MetricExporter) -> None:
        super().__init__(exporter._preferred_temporality, exporter._preferred_aggregation)
        self.exporter = exporter

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        try:
            result = self.exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:
            OTEL_DROPPED.labels("metrics", "export_failed").inc()
            raise
        if result is not MetricExportResult.SUCCESS:
            OTEL_DROPPED.labels("metrics", "export_failed").inc()
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.exporter.shutdown(timeout_millis=timeout_millis, **kwargs)


@dataclass
class Telemetry:
    """One process's providers and instruments."""

    pid: int
    tracer_provider: TracerProvider
    span_processor: BatchSpanProcessor
    meter_provider: MeterProvider
    server_address: str
    server_port: int | None

    def __post_init__(self) -> None:
        self.tracer = self.tracer_provider.get_tracer(SCOPE)
        meter = self.meter_provider.get_meter(SCOPE)
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def flush(self, timeout_millis: int = 10_000) -> bool:
        spans = self.tracer_provider.force_flush(timeout_millis)
        return self.meter_provider.force_flush(timeout_millis) and spans

    def close(self, timeout_millis: int = EXIT_FLUSH_MILLIS) -> None:
        """Send what is queued within about timeout_millis, then stop (the SDK's own waits up to 30 s)."""
        # BatchSpanProcessor.shutdown() waits the whole 30 s; its BatchProcessor takes a timeout.
        self.span_processor._batch_processor.shutdown(timeout_millis=timeout_millis)
        self.meter_provider.shutdown(timeout_millis=timeout_millis)


_lock = threading.Lock()
_telemetry: Telemetry | None = None
_propagator = TraceContextTextMapPropagator()


def enabled() -> bool:
    return bool(settings.OTEL_EXPORTER_OTLP_ENDPOINT)


def telemetry() -> Telemetry:
    """This process's providers, built on first use and again in a forked child."""
    global _telemetry
    current = _telemetry
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        if _telemetry is None or _telemetry.pid != os.getpid():
            _telemetry = _build()
        return _telemetry


def reset() -> None:
    """Flush and shut down this process's providers; the next use builds them from the settings again."""
    global _telemetry
    with _lock:
        current, _telemetry = _telemetry, None
    if current is not None and current.pid == os.getpid():
        current.close()


@atexit.register
def _close_at_exit() -> None:
    # A server's worker stops after its lifespan shutdown wrote the last request logs (and their spans).
    reset()


def _signal_url(signal: str) -> str:
    specific = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
    return specific or f"{settings.OTEL_EXPORTER_OTLP_ENDPOINT.rstrip('/')}/v1/{signal}"


def _resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the process id tells a server's workers apart."""
    resource = Resource.create({"process.pid": os.getpid()})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    return resource


def _build() -> Telemetry:
    # The SDK logs a warning for every span a full queue drops: with the collector down, one line per
    # request. They are counted in OTEL_DROPPED instead; export failures are still logged (as errors).
    logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)
    resource = _resource()
    # The SDK's own shutdown at exit off: it waits up to 30 s for a collector that is down; ours is
    # bounded (_close_at_exit).
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    # Queue size, batch size and delay from OTEL_BSP_*; the queue is bounded (default 2048 spans).
    exporter = CountingSpanExporter(OTLPSpanExporter(endpoint=_signal_url("traces")))
    span_processor = CountingBatchSpanProcessor(exporter)
    tracer_provider.add_span_processor(span_processor)
    reader = PeriodicExportingMetricReader(  # interval from OTEL_METRIC_EXPORT_INTERVAL (default 60 s)
        CountingMetricExporter(OTLPMetricExporter(endpoint=_signal_url("metrics")))
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
    upstream = urlsplit(settings.TOGETHER_BASE_URL)
    return Telemetry(os.getpid(), tracer_provider, span_processor, meter_provider, upstream.hostname or "",
                     upstream.port)


# ---- one stored entry: its span and metrics -------------------------------------------------------------

def export_recorded(sender: object, result: object, **kwargs: object) -> None:
    """The batch_recorded receiver: a span and metrics for every entry the batch stored."""
    stored = getattr(result, "stored", None)
    if not stored or not enabled():
        return
    current = telemetry()
    names = key_names([entry for entry, _ in stored])
    for entry, cost in stored:
        export_entry(current, entry, cost, names)


@dataclass(frozen=True)
class KeyNames:
    app: dict[int, str]
    upstream: dict[int, str]


def key_names(entries: Sequence[LogEntry]) -> KeyNames:
    """The names (never the secrets) of the app and upstream keys of a batch, in two queries."""
    from together_dash.keys.models import AppKey, TogetherKey

    app_ids = {entry.app_key_id for entry in entries if entry.app_key_id is not None}
    upstream_ids = {entry.upstream_key_id for entry in entries if entry.upstream_key_id is not None}
    app = dict(AppKey.objects.filter(pk__in=app_ids).values_list("pk", "name")) if app_ids else {}
    upstream = (dict(TogetherKey.objects.filter(pk__in=upstream_ids).values_list("pk", "name"))
                if upstream_ids else {})
    return KeyNames(app, upstream)


def operation_name(entry: LogEntry) -> str:
    """gen_ai.operation.name: the spec's name for the endpoint, else the endpoint's own ("rerank")."""
    label = endpoint_label(entry.endpoint)
    return OPERATIONS.get(label, label)


def error_type(entry: LogEntry) -> str | None:
    """error.type: our category and kind ("rate_limit.rate_limited"), else a failing status, else None."""
    if entry.category:
        return f"{entry.category}.{entry.kind}" if entry.kind else entry.category
    status = entry.status_code
    if status is None:
        return "no_response"
    return str(status) if status >= 400 else None


def common_attributes(current: Telemetry, entry: LogEntry) -> Attributes:
    """The attributes a span and its metrics share (the spec's low-cardinality ones)."""
    attributes: dict[str, object] = {
        "gen_ai.operation.name": operation_name(entry),
        "gen_ai.provider.name": PROVIDER_NAME,
        "server.address": current.server_address,
    }
    if current.server_port is not None:
        attributes["server.port"] = current.server_port
    if entry.model_requested:
        attributes["gen_ai.request.model"] = entry.model_requested
    if entry.model_served:
        attributes["gen_ai.response.model"] = entry.model_served
    failure = error_type(entry)
    if failure is not None:
        attributes["error.type"] = failure
    return attributes


def span_attributes(common: Attributes, entry: LogEntry, cost: Decimal | None, names: KeyNames) -> Attributes:
    attributes = dict(common)
    optional = {
        "gen_ai.usage.input_tokens": entry.prompt_tokens,
        "gen_ai.usage.output_tokens": entry.completion_tokens,
        "gen_ai.response.id": entry.request_id or None,
        "http.response.status_code": entry.status_code,
        "together_dash.app_key.name": names.app.get(entry.app_key_id),
        "together_dash.upstream_key.name": names.upstream.get(entry.upstream_key_id),
        "together_dash.cost_usd": float(cost) if cost is not None else None,
        "together_dash.error.category": entry.category or None,
        "together_dash.error.kind": entry.kind or None,
        "together_dash.ttft_ms": entry.ttft_ms,
    }
    attributes.update({name: value for name, value in optional.items() if value is not None})
    attributes["together_dash.source"] = entry.source
    attributes["together_dash.endpoint"] = entry.endpoint
    attributes["together_dash.stream"] = bool(entry.stream)
    if settings.OTEL_CAPTURE_CONTENT:
        attributes.update(content_attributes(entry))
    return attributes


def content_attributes(entry: LogEntry) -> dict[str, str]:
    """The request's and response's bodies (redacted and capped by the proxy), only when asked for."""
    content = entry.extra.get("content") if entry.extra else None
    if not isinstance(content, dict):
        return {}
    parts = {"together_dash.request.body": content.get("request"),
             "together_dash.response.body": content.get("response")}
    return {name: text[:MAX_CONTENT_CHARS] for name, text in parts.items() if isinstance(text, str) and text}


def export_entry(current: Telemetry, entry: LogEntry, cost: Decimal | None, names: KeyNames) -> None:
    """One span with the entry's own start and end, and its duration and token metrics."""
    start = int(entry.created_at.timestamp() * 1e9)
    seconds = (entry.latency_ms or 0.0) / 1000.0
    end = start + int(seconds * 1e9)
    parent = None
    if entry.traceparent:
        parent = _propagator.extract({"traceparent": entry.traceparent, "tracestate": entry.tracestate})
    common = common_attributes(current, entry)
    attributes = span_attributes(common, entry, cost, names)
    name = f"{attributes['gen_ai.operation.name']} {entry.model_requested or entry.model_served}".strip()
    span = current.tracer.start_span(name, context=parent, kind=SpanKind.CLIENT, attributes=attributes,
                                     start_time=start)
    if "error.type" in attributes:
        span.set_status(Status(StatusCode.ERROR, str(attributes["error.type"])))
    span.end(end_time=end)
    record_metrics(current, entry, seconds, common)


def record_metrics(current: Telemetry, entry: LogEntry, seconds: float, attributes: Attributes) -> None:
    if entry.latency_ms is not None:
        current.duration.record(seconds, attributes)
    for token_type, count in (("input", entry.prompt_tokens), ("output", entry.completion_tokens)):
        if count is not None:
            current.token_usage.record(count, {**attributes, "gen_ai.token.type": token_type})

