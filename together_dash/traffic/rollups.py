"""Usage over time from the rollup tables: the one reader behind the usage API and the dashboard pages.

Never scans RequestLog. The rule, for any range [start, end) and whoever asks:

- Totals are read in pieces: whole UTC days from UsageDay, whole hours from UsageHour where a day is
  not whole, and the ragged minutes at both edges from UsageMinute. Totals are so exact to the minute
  (the minute of start counts, the minute of end counts when end is not on a minute) while reading few
  rows. An edge older than the minute rollups' retention (ROLLUP_MINUTE_RETENTION_DAYS) is read from
  the hour rollups instead, rounded out to its whole hour.
- A series has minute buckets for ranges up to 3 hours that the minute rollups still cover, hour
  buckets otherwise; a chart asks for at most max_points buckets, and hours are then merged by a factor
  (2, 3, 6, 12 or 24, aligned to UTC midnight). Each bucket is summed from the same pieces, cut at the
  range's edges, so the buckets of a series always add up to the totals of its range.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import reduce
from typing import Any, Literal

from django.conf import settings
from django.db.models import BigIntegerField, Case, F, Min, Q, QuerySet, Sum, Value, When
from django.utils import timezone

from together_dash.traffic.models import (
    COUNTER_COLUMNS,
    ERROR_COLUMNS,
    LATENCY_BOUNDS_MS,
    LATENCY_COLUMNS,
    UsageDay,
    UsageHour,
    UsageMinute,
    UsageRollup,
)

Step = Literal["minute", "hour"]
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
STEPS: dict[str, timedelta] = {"minute": MINUTE, "hour": HOUR}
# Minute buckets up to this span (at most 180 of them); hour buckets beyond it.
MINUTE_BUCKETS_UP_TO = timedelta(hours=3)
# An explicit minute step may go this far (1,440 buckets).
MINUTE_RANGE_LIMIT = timedelta(hours=24)
HOUR_FACTORS = (1, 2, 3, 6, 12, 24)
Grain = tuple[timedelta, type[UsageRollup]]
# Coarsest first: a range is cut into the whole buckets of each, from the middle out.
GRAINS: tuple[Grain, ...] = (
    (DAY, UsageDay), (HOUR, UsageHour), (MINUTE, UsageMinute),
)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # a UTC midnight: buckets of whole days align to UTC days

Piece = tuple[type[UsageRollup], datetime, datetime]


# ---- buckets -----------------------------------------------------------------------------------------

def floor_to(moment: datetime, size: timedelta) -> datetime:
    return _EPOCH + ((_utc(moment) - _EPOCH) // size) * size


def ceil_to(moment: datetime, size: timedelta) -> datetime:
    return _EPOCH - ((_EPOCH - _utc(moment)) // size) * size


def align(start: datetime, end: datetime, size: timedelta | Step) -> tuple[datetime, datetime]:
    """Round start down and end up to whole buckets of the size, in UTC like the rollups' buckets."""
    size = STEPS[size] if isinstance(size, str) else size
    return floor_to(start, size), ceil_to(end, size)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def minute_rollups_kept_since(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(days=settings.ROLLUP_MINUTE_RETENTION_DAYS)


def pieces(
    start: datetime, end: datetime, coarsest: timedelta = DAY, now: datetime | None = None
) -> list[Piece]:
    """The rollup table and bucket span that serve each part of [start, end), never coarser than asked."""
    grains = [grain for grain in GRAINS if grain[0] <= coarsest]
    # A minute series reads minutes even where they are pruned: an hour row would not fit its buckets.
    kept_since = minute_rollups_kept_since(now) if coarsest > MINUTE else None
    return _cut(floor_to(start, MINUTE), ceil_to(end, MINUTE), grains, kept_since)


def _cut(start: datetime, end: datetime, grains: list[Grain], kept_since: datetime | None) -> list[Piece]:
    size, table = grains[0]
    if len(grains) == 1:
        return [_minutes(start, end, kept_since)]
    whole_from, whole_to = ceil_to(start, size), floor_to(end, size)
    if whole_from >= whole_to:
        return _cut(start, end, grains[1:], kept_since)
    found: list[Piece] = [(table, whole_from, whole_to)]
    if start < whole_from:
        found += _cut(start, whole_from, grains[1:], kept_since)
    if end > whole_to:
        found += _cut(whole_to, end, grains[1:], kept_since)
    return found


def _minutes(start: datetime, end: datetime, kept_since: datetime | None) -> Piece:
    if kept_since is None or start >= kept_since:
        return (UsageMinute, start, end)
    return (UsageHour, floor_to(start, HOUR), ceil_to(end, HOUR))


@dataclass(frozen=True, slots=True)
class Timeline:
    """The buckets of a series: the rollup step it counts in, and the (equal or merged) bucket size."""

    step: timedelta
    size: timedelta
    first: datetime
    last: datetime

    @property
    def step_name(self) -> Step:
        return "minute" if self.step == MINUTE else "hour"

    @property
    def table(self) -> type[UsageRollup]:
        """The rollups of the step (whole days or hours inside the range may come from coarser ones)."""
        return UsageMinute if self.step == MINUTE else UsageHour

    @property
    def count(self) -> int:
        return int((self.last - self.first) / self.size)

    def buckets(self) -> list[datetime]:
        return [self.first + self.size * index for index in range(self.count)]

    def slot(self, moment: datetime) -> int:
        """Index of the bucket that holds a moment (or a rollup bucket's start)."""
        return int((moment - self.first) // self.size)


def pick_step(start: datetime, end: datetime, now: datetime | None = None) -> Step:
    """Minute buckets for ranges up to 3 hours that the minute rollups still cover, hours otherwise."""
    short = end - start <= MINUTE_BUCKETS_UP_TO
    return "minute" if short and start >= minute_rollups_kept_since(now) else "hour"


def timeline(
    start: datetime,
    end: datetime,
    step: Step | None = None,
    max_points: int | None = None,
    now: datetime | None = None,
) -> Timeline:
    """The series' buckets over [start, end): of the step, hours merged to stay within max_points."""
    step = step or pick_step(start, end, now)
    if step == "minute":
        if end - start > MINUTE_RANGE_LIMIT:
            raise ValueError("minute steps are limited to ranges of 24 hours")
        return Timeline(MINUTE, MINUTE, *align(start, end, MINUTE))
    size = HOUR * _hour_factor(end - start, max_points)
    return Timeline(HOUR, size, *align(start, end, size))


def _hour_factor(span: timedelta, max_points: int | None) -> int:
    if max_points is None:
        return 1
    hours = math.ceil(span / HOUR) + 1
    return next((factor for factor in HOUR_FACTORS if hours / factor <= max_points), HOUR_FACTORS[-1])


# ---- sums --------------------------------------------------------------------------------------------

def summed(
    start: datetime,
    end: datetime,
    columns: Iterable[str] = COUNTER_COLUMNS,
    key_id: int | None = None,
    model: str | None = None,
    by: str | None = None,
    now: datetime | None = None,
    key_ids: Collection[int] | None = None,
) -> dict[Any, dict[str, Any]]:
    """Sums of the columns over [start, end), per value of `by` (one entry, None, without it).

    key_ids narrows to a set of upstream keys (an organisation's), as key_id does to one.
    """
    columns = tuple(columns)
    totals: dict[Any, dict[str, Any]] = {}
    for rows in _piece_rows(pieces(start, end, now=now), key_id, model, key_ids):
        if by:
            found = list(rows.values(by).annotate(**_sums(columns)).order_by())
        else:
            found = [rows.aggregate(**_sums(columns))]
        for row in found:
            _add_into(totals.setdefault(row[by] if by else None, _zeros(columns)), row, columns)
    return totals


def bucketed(
    line: Timeline,
    start: datetime,
    end: datetime,
    columns: Iterable[str] = COUNTER_COLUMNS,
    key_id: int | None = None,
    model: str | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Sums of the columns in each of the timeline's buckets, counting only what lies in [start, end)."""
    columns = tuple(columns)
    slots = [_zeros(columns) for _ in range(line.count)]
    coarsest = next(size for size, _ in GRAINS if line.size % size == timedelta(0))
    for rows in _piece_rows(pieces(start, end, coarsest, now), key_id, model):
        for row in rows.values("bucket").annotate(**_sums(columns)).order_by():
            _add_into(slots[line.slot(row["bucket"])], row, columns)
    return slots


def window_sums(
    start: datetime,
    end: datetime,
    window: Literal["hour", "day"],
    columns: Iterable[str] = COUNTER_COLUMNS,
    key_groups: Mapping[int, int] | None = None,
) -> list[dict[str, Any]]:
    """Sums per (bucket, group, model) of whole hours (UsageHour) or UTC days (UsageDay).

    The group is the upstream key id; with key_groups (key id -> group id, e.g. the key's organisation)
    it is the key's group, summed in the database, and None for keys in no group and rows with no key.
    start and end are rounded out to whole windows first: a window is counted whole or not at all, as
    Together's billing report counts it.
    """
    size, table = (HOUR, UsageHour) if window == "hour" else (DAY, UsageDay)
    first, last = align(start, end, size)
    columns = tuple(columns)
    rows = table.objects.filter(bucket__gte=first, bucket__lt=last)
    found = (
        rows.annotate(group=_group_of_key(key_groups))
        .values("bucket", "group", "model")
        .annotate(**_sums(columns))
        .order_by()
    )
    sums = {f"sum_{column}": column for column in columns}
    return [_unprefixed_sums(row, sums) for row in found]


def _unprefixed_sums(row: dict[str, Any], sums: dict[str, str]) -> dict[str, Any]:
    """A grouped row with its sums under their column names, 0 where the database summed nothing."""
    return {name: value for name, value in row.items() if name not in sums} | {
        column: row[name] or 0 for name, column in sums.items()
    }


def _group_of_key(key_groups: Mapping[int, int] | None) -> Any:
    if key_groups is None:
        return F("upstream_key_id")
    members: dict[int, list[int]] = {}
    for key_id, group in key_groups.items():
        members.setdefault(group, []).append(key_id)
    whens = [When(upstream_key_id__in=keys, then=Value(group)) for group, keys in sorted(members.items())]
    nothing = Value(None, output_field=BigIntegerField())
    return Case(*whens, default=nothing, output_field=BigIntegerField()) if whens else nothing


def _piece_rows(
    found: list[Piece], key_id: int | None, model: str | None, key_ids: Collection[int] | None = None
) -> Iterable[QuerySet[UsageRollup]]:
    """One queryset per rollup table, covering every piece of that table."""
    spans: dict[type[UsageRollup], list[list[datetime]]] = {}
    for table, first, last in sorted(found, key=lambda piece: piece[1]):
        joined = spans.setdefault(table, [])
        # Adjacent spans become one: a single range scans the bucket index, an OR of ranges may not.
        if joined and joined[-1][1] == first:
            joined[-1][1] = last
        else:
            joined.append([first, last])
    for table, within in spans.items():
        rows = table.objects.filter(reduce(operator.or_, (Q(bucket__gte=a, bucket__lt=b) for a, b in within)))
        if key_id is not None:
            rows = rows.filter(upstream_key_id=key_id)
        if key_ids is not None:
            rows = rows.filter(upstream_key_id__in=list(key_ids))
        if model:
            rows = rows.filter(model=model)
        yield rows


def _sums(columns: Iterable[str]) -> dict[str, Sum]:
    # Prefixed: an annotation may not share a name with a model field.
    return {f"sum_{column}": Sum(column) for column in columns}


def _zeros(columns: Iterable[str]) -> dict[str, Any]:
    return {column: Decimal(0) if column == "cost_usd" else 0 for column in columns}


def _add_into(sums: dict[str, Any], row: dict[str, Any], columns: Iterable[str]) -> None:
    for column in columns:
        sums[column] += row[f"sum_{column}"] or 0


# ---- the usage API's shapes --------------------------------------------------------------------------

@dataclass(slots=True)
class UsageCounts:
    """Summed rollup counters for one bucket or one whole range."""

    requests: int = 0
    errors_by_category: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced_requests: int = 0
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
            unpriced_requests=self.unpriced_requests + other.unpriced_requests,
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


def usage_series(
    start: datetime,
    end: datetime,
    key_id: int | None = None,
    model: str | None = None,
    step: Step | None = None,
) -> UsageSeries:
    """Every counter in each bucket over [start, end), empty buckets included; they add up to the totals."""
    line = timeline(start, end, step)
    slots = bucketed(line, start, end, key_id=key_id, model=model)
    points = [UsagePoint(bucket, _counts(sums)) for bucket, sums in zip(line.buckets(), slots, strict=True)]
    return UsageSeries(line.step_name, line.first, line.last, points)


def usage_totals(
    start: datetime, end: datetime, key_id: int | None = None, model: str | None = None
) -> UsageCounts:
    """Every counter summed over [start, end), exact to the minute."""
    return _counts(summed(start, end, key_id=key_id, model=model).get(None) or _zeros(COUNTER_COLUMNS))


def usage_breakdown(
    start: datetime, end: datetime, by: Literal["model", "upstream_key"], key_id: int | None = None
) -> dict[str | int | None, UsageCounts]:
    """Totals per model or per upstream key over the range, busiest first."""
    found = summed(start, end, key_id=key_id, by=by)
    ordered = sorted(found.items(), key=lambda item: -item[1]["requests"])
    return {group: _counts(sums) for group, sums in ordered}


@dataclass(frozen=True, slots=True)
class AllTimeUsage:
    """Everything recorded for one upstream key and model, since its first day."""

    upstream_key_id: int | None
    model: str
    first_day: datetime
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal


ALL_TIME_COLUMNS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd")


def all_time_usage() -> list[AllTimeUsage]:
    """Counters since the first request, per upstream key and model: they only ever grow.

    Read from the day rollups, which retention never prunes (minute rollups it does), so a Prometheus
    counter built on them never goes down. One aggregate over the day rows (days x keys x models).
    """
    rows = (
        UsageDay.objects.values("upstream_key_id", "model")
        .annotate(first_day=Min("bucket"), **_sums(ALL_TIME_COLUMNS))
        .order_by()
    )
    return [
        AllTimeUsage(
            upstream_key_id=row["upstream_key_id"],
            model=row["model"],
            first_day=row["first_day"],
            **{column: row[f"sum_{column}"] or 0 for column in ALL_TIME_COLUMNS},
        )
        for row in rows
    ]


def minute_totals_since(since: datetime) -> UsageCounts:
    """All counters from the minute of `since` on, to now (the alert rules' windows are minutes long)."""
    rows = UsageMinute.objects.filter(bucket__gte=since.replace(second=0, microsecond=0))
    return _counts(_unprefixed(rows.aggregate(**_sums(COUNTER_COLUMNS))))


def billing_errors_since(key_id: int | None, since: datetime) -> int:
    """402s on one upstream key (None: requests that had none) from the minute of `since` on."""
    minute = since.replace(second=0, microsecond=0)
    rows = UsageMinute.objects.filter(upstream_key_id=key_id, bucket__gte=minute)
    return int(rows.aggregate(n=Sum(ERROR_COLUMNS["billing"]))["n"] or 0)


def unpriced_models_since(since: datetime) -> dict[str, int]:
    """Requests with no known cost (their model has no price) per model, from the minute of `since` on."""
    minute = since.replace(second=0, microsecond=0)
    rows = UsageMinute.objects.filter(bucket__gte=minute, unpriced_requests__gt=0)
    found = rows.values("model").annotate(n=Sum("unpriced_requests")).order_by("model")
    return {row["model"]: int(row["n"]) for row in found if row["n"] > 0}


def spend_by_key_and_model(start: datetime, end: datetime) -> dict[tuple[int | None, str], dict[str, Any]]:
    """Cost and unpriced requests per (upstream key id, model) over [start, end), read like summed()."""
    columns = ("cost_usd", "unpriced_requests")
    totals: dict[tuple[int | None, str], dict[str, Any]] = {}
    for rows in _piece_rows(pieces(start, end), None, None):
        for row in rows.values("upstream_key_id", "model").annotate(**_sums(columns)).order_by():
            place = (row["upstream_key_id"], row["model"])
            _add_into(totals.setdefault(place, _zeros(columns)), row, columns)
    return totals


def _unprefixed(row: dict[str, Any]) -> dict[str, Any]:
    return {name.removeprefix("sum_"): value or 0 for name, value in row.items()}


def _counts(sums: dict[str, Any]) -> UsageCounts:
    return UsageCounts(
        requests=sums["requests"],
        errors_by_category={category: sums[column] for category, column in ERROR_COLUMNS.items()},
        prompt_tokens=sums["prompt_tokens"],
        completion_tokens=sums["completion_tokens"],
        total_tokens=sums["total_tokens"],
        cost_usd=Decimal(sums["cost_usd"]),
        unpriced_requests=sums["unpriced_requests"],
        latency_sum_ms=float(sums["latency_sum_ms"]),
        latency_count=sums["latency_count"],
        latency_histogram={column: sums[column] for column in LATENCY_COLUMNS},
    )
