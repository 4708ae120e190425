"""Filtered, time-bounded, keyset-paginated reads of request logs and error groups.

Listing is newest first on (created_at, id), which the RequestLog keyset indexes serve directly: a page
deep in a range of tens of millions of rows costs the same as the first one. Every query is bounded in
time (at most MAX_SPAN), so nothing ever scans the whole table.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from together_dash.traffic.models import ErrorGroup, RequestLog

DEFAULT_SPAN = timedelta(hours=24)
MAX_SPAN = timedelta(days=31)
MAX_LIMIT = 500
DEFAULT_LIMIT = 100
EXPORT_CHUNK = 2000
GROUP_SORTS = {
    "last_seen": ("-last_seen", "-id"), "first_seen": ("-first_seen", "-id"), "count": ("-count", "-id"),
}


class FilterError(ValueError):
    """A filter or cursor that cannot be used; the message is shown to the caller."""


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime


def window(start: datetime | None, end: datetime | None, now: datetime | None = None) -> Window:
    """The time range to read: last 24 hours by default, never longer than MAX_SPAN."""
    end = _aware(end) if end else (now or timezone.now())
    start = _aware(start) if start else end - DEFAULT_SPAN
    if start >= end:
        raise FilterError("start must be before end.")
    if end - start > MAX_SPAN:
        raise FilterError(f"The range may span at most {MAX_SPAN.days} days.")
    return Window(start, end)


def _aware(value: datetime) -> datetime:
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class RequestFilters:
    """What GET /api/requests and the CSV export filter on, besides the time window."""

    category: str | None = None
    kind: str | None = None
    model: str | None = None
    key_id: int | None = None
    status: int | None = None
    app_key_id: int | None = None

    def apply(self, logs: QuerySet[RequestLog]) -> QuerySet[RequestLog]:
        lookups = {
            "category": self.category, "kind": self.kind, "model_requested": self.model,
            "upstream_key_id": self.key_id, "status_code": self.status, "app_key_id": self.app_key_id,
        }
        return logs.filter(**{name: value for name, value in lookups.items() if value is not None})


def request_logs(span: Window, filters: RequestFilters) -> QuerySet[RequestLog]:
    """The filtered logs in the window, newest first."""
    logs = RequestLog.objects.filter(created_at__gte=span.start, created_at__lt=span.end)
    return filters.apply(logs).order_by("-created_at", "-id")


def after(logs: QuerySet[RequestLog], position: tuple[datetime, int]) -> QuerySet[RequestLog]:
    """The logs that come after a (created_at, id) position in newest-first order."""
    created_at, log_id = position
    # The plain created_at <= bound lets the index scan start at the position instead of the top.
    return logs.filter(created_at__lte=created_at).filter(Q(created_at__lt=created_at) | Q(id__lt=log_id))


def page(
    span: Window, filters: RequestFilters, limit: int, cursor: str | None = None
) -> tuple[list[RequestLog], str | None]:
    """One page of logs and the cursor of the next page (None on the last one)."""
    logs = request_logs(span, filters)
    if cursor:
        logs = after(logs, decode_cursor(cursor))
    rows = list(logs[: limit + 1])
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1])


def iterate(span: Window, filters: RequestFilters, chunk: int = EXPORT_CHUNK) -> Iterator[RequestLog]:
    """Every matching log, newest first, read in keyset chunks so memory stays flat."""
    logs = request_logs(span, filters)
    position: tuple[datetime, int] | None = None
    while True:
        rows = list((after(logs, position) if position else logs)[:chunk])
        yield from rows
        if len(rows) < chunk:
            return
        position = (rows[-1].created_at, rows[-1].id)


def encode_cursor(log: RequestLog) -> str:
    """An opaque token for the position after this log."""
    raw = json.dumps([log.created_at.isoformat(), log.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, log_id = json.loads(raw)
        created_at = parse_datetime(stamp)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise FilterError("The cursor is not valid; start again without one.") from None
    if created_at is None or timezone.is_naive(created_at) or not isinstance(log_id, int):
        raise FilterError("The cursor is not valid; start again without one.")
    return created_at, log_id


def log_fields(log: RequestLog) -> dict[str, Any]:
    """One log as the API and the CSV show it: ids and numbers, never a secret."""
    return {
        "id": log.id,
        "created_at": log.created_at,
        "source": log.source,
        "app_key_id": log.app_key_id,
        "upstream_key_id": log.upstream_key_id,
        "key_fingerprint": log.key_fingerprint,
        "client_id": log.client_id,
        "method": log.method,
        "endpoint": log.endpoint,
        "model": log.model_requested,
        "model_served": log.model_served,
        "stream": log.stream,
        "status": log.status_code,
        "latency_ms": log.latency_ms,
        "ttft_ms": log.ttft_ms,
        "prompt_tokens": log.prompt_tokens,
        "completion_tokens": log.completion_tokens,
        "total_tokens": log.total_tokens,
        "cached_tokens": log.cached_tokens,
        "cost_usd": log.cost_usd,
        "request_id": log.request_id,
        "ratelimit_remaining": log.ratelimit_remaining,
        "tokenlimit_remaining": log.tokenlimit_remaining,
        "category": log.category,
        "kind": log.kind,
        "error_message": log.error_message,
        "error_group_id": log.error_group_id,
    }


# ---- error groups ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class GroupFilters:
    state: str | None = ErrorGroup.State.OPEN
    category: str | None = None
    kind: str | None = None
    model: str | None = None
    key_id: int | None = None
    since: datetime | None = None


def error_groups(filters: GroupFilters, sort: str = "last_seen") -> QuerySet[ErrorGroup]:
    """Error groups matching the filters, sorted by last_seen, first_seen or count (descending)."""
    if sort not in GROUP_SORTS:
        raise FilterError(f"sort must be one of: {', '.join(GROUP_SORTS)}.")
    lookups = {
        "state": filters.state, "category": filters.category, "kind": filters.kind, "model": filters.model,
        "upstream_key_id": filters.key_id,
        "last_seen__gte": _aware(filters.since) if filters.since else None,
    }
    given = {name: value for name, value in lookups.items() if value is not None}
    groups = ErrorGroup.objects.filter(**given)
    return groups.order_by(*GROUP_SORTS[sort])
