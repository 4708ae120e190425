"""Building traffic for the alert tests through the real recording path."""

from __future__ import annotations

from datetime import UTC, datetime

from together_dash.traffic.entries import LogEntry

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


def payment_required(key_id: int | None, at: datetime | None = None) -> LogEntry:
    return LogEntry(
        created_at=at or datetime.now(UTC),
        endpoint="/v1/chat/completions",
        upstream_key_id=key_id,
        model_requested=MODEL,
        status_code=402,
        latency_ms=12.0,
        category="billing",
        kind="insufficient_credits",
        error_message="Insufficient credits",
    )


def success(key_id: int | None, at: datetime | None = None) -> LogEntry:
    return LogEntry(
        created_at=at or datetime.now(UTC),
        endpoint="/v1/chat/completions",
        upstream_key_id=key_id,
        model_requested=MODEL,
        status_code=200,
        latency_ms=80.0,
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
    )
