"""Building traffic for the alert tests through the real recording path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from together_dash.traffic.entries import LogEntry
from together_dash.traffic.recording import record_entries

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


def record(capture: object, entries: list[LogEntry]) -> None:
    """record_entries() and the after-commit alert hook, as the proxy's flusher runs them."""
    with capture(execute=True):  # type: ignore[operator]
        record_entries(entries)


def record_402_storm(capture: object, key_id: int | None) -> datetime:
    """10,000 402s on one key in batches of 500, a second apart, as the proxy flushes them; the start."""
    start = datetime.now(UTC)
    for batch in range(20):
        at = start + timedelta(seconds=batch)
        record(capture, [payment_required(key_id, at) for _ in range(500)])
    return start
