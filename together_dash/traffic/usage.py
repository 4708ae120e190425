"""Usage over time from the rollup tables, for charts and the usage API; never scans RequestLog.

Ranges up to 24 hours read minute rollups (while they are kept, ROLLUP_MINUTE_RETENTION_DAYS), longer
ones hour rollups; an hour series or total covers whole hours, so its edges are rounded out to the hour.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from django.conf import settings
from django.db.models import QuerySet, Sum
from django.utils import timezone

from together_dash.traffic.models import (
    COUNTER_COLUMNS,
    ERROR_COLUMNS,
    LATENCY_BOUNDS_MS,
    LATENCY_COLUMNS,
    UsageHour,
    UsageMinute,
    UsageRollup,
)

Step = Literal["minute", "hour"]
STEPS: dict[str, timedelta] = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}
MINUTE_RANGE_LIMIT = timedelta(hours=24)
_ROLLUPS: dict[str, type[UsageRollup]] = {"minute": UsageMinute, "hour": UsageHour}


@dataclass(slots=True)
class UsageCounts:
    """Summed rollup counters for one bucket or one whole range."""

    requests: int = 0
    errors_by_category: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_sum_ms: float = 0.0
    latency_count: int = 0
    latency_histogram: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(self.errors_by_category.values())

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def latency_avg_ms(self) -> float | None:
        return self.latency_sum_ms / self.latency_count if self.latency_count else None

    def __add__(self, other: UsageCounts) -> UsageCounts:
        return UsageCounts(
            requests=self.requests + other.requests,
            errors_by_category=_added(self.errors_by_category, other.errors_by_category),
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            latency_sum_ms=self.latency_sum_ms + other.latency_sum_ms,
            latency_count=self.latency_count + other.latency_count,
            latency_histogram=_added(self.latency_histogram, other.latency_histogram),
        )

    def latency_percentile_ms(self, fraction: float) -> float | None:
        """Upper bound of the histogram bucket holding that fraction; None past 10 s or when empty."""
        if not self.latency_count:
            return None
        needed, seen = fraction * self.latency_count, 0
        for bound, column in zip(LATENCY_BOUNDS_MS, LATENCY_COLUMNS, strict=False):
            seen += self.latency_histogram.get(column, 0)
            if seen >= needed:
                return float(bound)
        return None


def _added(first: dict[str, int], second: dict[str, int]) -> dict[str, int]:
    return {name: first.get(name, 0) + second.get(name, 0) for name in first.keys() | second.keys()}


@dataclass(slots=True)
class UsagePoint:
    bucket: datetime
    counts: UsageCounts


@dataclass(slots=True)
class UsageSeries:
    step: str
    start: datetime
    end: datetime
    points: list[UsagePoint]

    @property
    def totals(self) -> UsageCounts:
        return sum((point.counts for point in self.points), UsageCounts())


def pick_step(start: datetime, end: datetime, now: datetime | None = None) -> Step:
    """Minute rollups for ranges up to 24 h that they still cover, hour rollups otherwise."""
    now = now or timezone.now()
    kept_since = now - timedelta(days=settings.ROLLUP_MINUTE_RETENTION_DAYS)
    return "minute" if end - start <= MINUTE_RANGE_LIMIT and start >= kept_since else "hour"


def align(start: datetime, end: datetime, step: Step) -> tuple[datetime, datetime]:
    """Round start down and end up to whole buckets of the step, in UTC like the rollups' buckets."""
    size = STEPS[step]
    start, end = _utc(start), _utc(end)
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    first = epoch + ((start - epoch) // size) * size
    last = epoch + -((epoch - end) // size) * size
    return first, last


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def usage_series(
    start: datetime,
    end: datetime,
    key_id: int | None = None,
    model: str | None = None,
    step: Step | None = None,
) -> UsageSeries:
    """Totals and errors per category for every bucket in [start, end), empty buckets included."""
    step = step or pick_step(start, end)
    if step == "minute" and end - start > MINUTE_RANGE_LIMIT:
        raise ValueError("minute steps are limited to ranges of 24 hours")
    first, last = align(start, end, step)
    rows = _filtered(step, first, last, key_id, model).values("bucket").annotate(**_sums()).order_by("bucket")
    by_bucket = {row["bucket"]: _counts(row) for row in rows}
    buckets = _buckets(first, last, step)
    points = [UsagePoint(bucket, by_bucket.get(bucket) or UsageCounts()) for bucket in buckets]
    return UsageSeries(step, first, last, points)


def usage_totals(
    start: datetime, end: datetime, key_id: int | None = None, model: str | None = None
) -> UsageCounts:
    """All counters summed over the range, from the same rollups a series of that range uses."""
    step = pick_step(start, end)
    first, last = align(start, end, step)
    return _counts(_filtered(step, first, last, key_id, model).aggregate(**_sums()))


def usage_breakdown(
    start: datetime, end: datetime, by: Literal["model", "upstream_key"], key_id: int | None = None
) -> dict[str | int | None, UsageCounts]:
    """Totals per model or per upstream key over the range, busiest first."""
    step = pick_step(start, end)
    first, last = align(start, end, step)
    rows = _filtered(step, first, last, key_id, None).values(by).annotate(**_sums()).order_by("-requests")
    return {row[by]: _counts(row) for row in rows}


def minute_totals_since(since: datetime) -> UsageCounts:
    """All counters from the minute of `since` on, to now (the alert rules' windows are minutes long)."""
    rows = UsageMinute.objects.filter(bucket__gte=since.replace(second=0, microsecond=0))
    return _counts(rows.aggregate(**_sums()))


def billing_errors_since(key_id: int | None, since: datetime) -> int:
    """402s on one upstream key (None: requests that had none) from the minute of `since` on."""
    minute = since.replace(second=0, microsecond=0)
    rows = UsageMinute.objects.filter(upstream_key_id=key_id, bucket__gte=minute)
    return int(rows.aggregate(n=Sum(ERROR_COLUMNS["billing"]))["n"] or 0)


def _filtered(
    step: Step, first: datetime, last: datetime, key_id: int | None, model: str | None
) -> QuerySet[UsageRollup]:
    rows = _ROLLUPS[step].objects.filter(bucket__gte=first, bucket__lt=last)
    if key_id is not None:
        rows = rows.filter(upstream_key_id=key_id)
    if model is not None:
        rows = rows.filter(model=model)
    return rows


def _sums() -> dict[str, Sum]:
    return {column: Sum(column) for column in COUNTER_COLUMNS}


def _counts(row: dict) -> UsageCounts:
    value = {column: row.get(column) or 0 for column in COUNTER_COLUMNS}
    return UsageCounts(
        requests=value["requests"],
        errors_by_category={category: value[column] for category, column in ERROR_COLUMNS.items()},
        prompt_tokens=value["prompt_tokens"],
        completion_tokens=value["completion_tokens"],
        total_tokens=value["total_tokens"],
        cost_usd=Decimal(value["cost_usd"]),
        latency_sum_ms=float(value["latency_sum_ms"]),
        latency_count=value["latency_count"],
        latency_histogram={column: value[column] for column in LATENCY_COLUMNS},
    )


def _buckets(first: datetime, last: datetime, step: Step) -> list[datetime]:
    size, count = STEPS[step], int((last - first) / STEPS[step])
    return [first + size * index for index in range(count)]
