"""LogEntry: one captured request, as the proxy and the ingest API hand it to recording.record_entries()."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class LogEntry:
    """A request to Together before it becomes a RequestLog row. Unknown numbers stay None, never 0."""

    created_at: datetime
    endpoint: str
    method: str = "POST"
    source: str = "proxy"
    app_key_id: int | None = None
    upstream_key_id: int | None = None
    key_fingerprint: str = ""
    client_id: str | None = None
    model_requested: str = ""
    model_served: str = ""
    stream: bool = False
    status_code: int | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    request_id: str = ""
    ratelimit_limit: int | None = None
    ratelimit_remaining: int | None = None
    ratelimit_reset: float | None = None
    tokenlimit_limit: int | None = None
    tokenlimit_remaining: int | None = None
    category: str = ""
    kind: str = ""
    error_message: str = ""
    extra: dict[str, object] = field(default_factory=dict)
    # The caller's W3C trace context (traceparent, tracestate headers), kept only while OpenTelemetry
    # export is on, so the request's span continues the caller's trace; never stored in the database.
    traceparent: str = ""
    tracestate: str = ""
