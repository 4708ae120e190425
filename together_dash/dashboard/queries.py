"""Every read the dashboard makes. Each one is bounded and served by an index, whatever the table sizes.

Counts over time come from the usage rollups through traffic.rollups, the reader the usage API uses
too (one rule for buckets and edges), never from aggregating RequestLog; only the sums a page shows
are computed. RequestLog itself is read in keyset
pages of a bounded window (the explorer) or as one error group's latest occurrences, capped.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from functools import reduce
from typing import Any, Literal

from django.apps import apps
from django.db.models import Case, Count, IntegerField, Max, Min, Q, QuerySet, Value, When
from django.db.models.functions import TruncHour, TruncMinute

from together_dash.catalog.models import ModelChange, ModelInfo
from together_dash.catalog.services import close_matches, successor_for, suggest_successor
from together_dash.dashboard.palette import headroom_level
from together_dash.dashboard.ranges import Range
from together_dash.jobs.models import BatchJob, FineTuneEvent, FineTuneJob
from together_dash.keys.models import RateLimitSnapshot, TogetherKey
from together_dash.pollers.models import PollerHeartbeat
from together_dash.proxy.metrics import dropped_logs_total
from together_dash.together.types import FineTuneStatus
from together_dash.traffic import listing, rollups
from together_dash.traffic.models import ERROR_COLUMNS, ErrorGroup, RequestLog

MINUTE = rollups.MINUTE
# Chart buckets at most; hour buckets are merged by a factor to stay within it.
MAX_POINTS = 200
FIGURE_COLUMNS: tuple[str, ...] = (
    "requests", *ERROR_COLUMNS.values(), "total_tokens", "cost_usd", "unpriced_requests",
)
QUOTA_LOOKBACK = timedelta(hours=1)
QUOTA_BARS = 12
QUOTA_TREND_SERIES = 6
OVERVIEW_ROWS = 8
OCCURRENCE_CAP = 10_000
RECENT_OCCURRENCES = 50
EVENT_CAP = 1000
REQUEST_PAGE_SIZE = 50
CHANGES_SHOWN = 20


# ---- buckets -----------------------------------------------------------------------------------------

Timeline = rollups.Timeline


def timeline(rng: Range, now: datetime | None = None) -> Timeline:
    """The chart buckets of the range: traffic.rollups' rule, merged to at most MAX_POINTS."""
    return rollups.timeline(rng.start, rng.end, max_points=MAX_POINTS, now=now)


# ---- usage over time ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    timeline: Timeline
    values: dict[str, list[int]]


def rollup_series(rng: Range, columns: tuple[str, ...], now: datetime | None = None) -> Series:
    """Sums of the given rollup columns per chart bucket, empty buckets included."""
    line = timeline(rng, now)
    slots = rollups.bucketed(line, rng.start, rng.end, columns, rng.key_id, rng.model, now)
    return Series(line, {column: [sums[column] for sums in slots] for column in columns})


def category_series(rng: Range, now: datetime | None = None) -> Series:
    """Errors per category per bucket, keyed by category."""
    series = rollup_series(rng, tuple(ERROR_COLUMNS.values()), now)
    by_category = {category: series.values[column] for category, column in ERROR_COLUMNS.items()}
    return Series(series.timeline, by_category)


def volume_series(rng: Range, now: datetime | None = None) -> Series:
    """Requests and errors (all categories) per bucket."""
    series = rollup_series(rng, ("requests", *ERROR_COLUMNS.values()), now)
    errors = [sum(parts) for parts in zip(*(series.values[c] for c in ERROR_COLUMNS.values()), strict=True)]
    return Series(series.timeline, {"requests": series.values["requests"], "errors": errors})


# ---- headline figures --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    """Totals over a range."""

    requests: int = 0
    errors: int = 0
    total_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    # Requests left out of cost_usd because their model has no price: the cost shown is a floor.
    unpriced_requests: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True, slots=True)
class Comparison:
    current: Figures
    previous: Figures


def figures(rng: Range, now: datetime | None = None) -> Figures:
    """Totals over the range, exact to the minute."""
    return _summed(rng, None, now).get(None, Figures())


def compared_figures(rng: Range, now: datetime | None = None) -> Comparison:
    return Comparison(figures(rng, now), figures(rng.previous(), now))


def figures_by(
    rng: Range, by: Literal["model", "upstream_key"], now: datetime | None = None
) -> dict[Any, Figures]:
    """Totals over the range per model or per upstream key id."""
    return _summed(rng, by, now)


def _summed(rng: Range, by: str | None, now: datetime | None) -> dict[Any, Figures]:
    found = rollups.summed(rng.start, rng.end, FIGURE_COLUMNS, rng.key_id, rng.model, by, now)
    return {group: _figures(sums) for group, sums in found.items()}


def _figures(sums: dict[str, Any]) -> Figures:
    return Figures(
        requests=sums["requests"],
        errors=sum(sums[column] for column in ERROR_COLUMNS.values()),
        total_tokens=sums["total_tokens"],
        cost_usd=Decimal(sums["cost_usd"]),
        unpriced_requests=sums["unpriced_requests"],
    )


# ---- quota (rate-limit headroom) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Headroom:
    """The latest rate-limit snapshot of one key and model (model '' is key-level)."""

    key_id: int
    key_name: str
    model: str
    headroom_pct: float
    taken_at: datetime
    request_remaining: float | None
    request_limit: float | None
    token_remaining: float | None
    token_limit: float | None

    @property
    def level(self) -> str:
        return headroom_level(self.headroom_pct)

    @property
    def label(self) -> str:
        return f"{self.key_name} · {self.model or 'all models'}"

    @property
    def short_label(self) -> str:
        """The label without the model's organisation, short enough for a chart axis on a phone."""
        return f"{self.key_name} · {self.model.rsplit('/', 1)[-1] or 'all models'}"


def _snapshots(rng: Range) -> QuerySet[RateLimitSnapshot]:
    snapshots = RateLimitSnapshot.objects.filter(headroom_pct__isnull=False)
    if rng.key_id is not None:
        snapshots = snapshots.filter(key_id=rng.key_id)
    if rng.model:
        # Key-level limits bind every model, so they stay in view when filtering by model.
        snapshots = snapshots.filter(model__in=[rng.model, ""])
    return snapshots


def latest_headroom(rng: Range, limit: int | None = QUOTA_BARS) -> list[Headroom]:
    """The newest snapshot of each key and model in the hour before the range's end, tightest first."""
    recent = _snapshots(rng).filter(taken_at__gt=rng.end - QUOTA_LOOKBACK, taken_at__lte=rng.end)
    newest = {
        (row["key_id"], row["model"]): row["at"]
        for row in recent.values("key_id", "model").annotate(at=Max("taken_at")).order_by()
    }
    if not newest:
        return []
    keys = {key_id for key_id, _ in newest}
    rows = recent.filter(taken_at__in=set(newest.values()), key_id__in=keys)
    names = dict(TogetherKey.objects.filter(id__in=keys).values_list("id", "name"))
    tightest: dict[tuple[int, str], Headroom] = {}
    for row in rows:
        pair = (row.key_id, row.model)
        if newest.get(pair) != row.taken_at:
            continue
        # A probe and a proxied response can share an instant: the tighter one is the truth to show.
        if pair not in tightest or row.headroom_pct < tightest[pair].headroom_pct:
            tightest[pair] = _headroom(row, names)
    ordered = sorted(tightest.values(), key=lambda item: (item.headroom_pct, item.label))
    return ordered if limit is None else ordered[:limit]


def _headroom(row: RateLimitSnapshot, names: dict[int, str]) -> Headroom:
    return Headroom(
        key_id=row.key_id,
        key_name=names.get(row.key_id, f"key {row.key_id}"),
        model=row.model,
        headroom_pct=row.headroom_pct,
        taken_at=row.taken_at,
        request_remaining=row.request_remaining,
        request_limit=row.request_limit,
        token_remaining=row.token_remaining,
        token_limit=row.token_limit,
    )


def headroom_trend(
    rng: Range, pairs: list[tuple[int, str]], now: datetime | None = None
) -> tuple[Timeline, dict[tuple[int, str], list[float | None]]]:
    """The lowest headroom per bucket of each (key, model) pair; None where nothing was recorded."""
    line = timeline(rng, now)
    series: dict[tuple[int, str], list[float | None]] = {pair: [None] * line.count for pair in pairs}
    if not pairs:
        return line, series
    which = reduce(operator.or_, (Q(key_id=key_id, model=model) for key_id, model in pairs))
    bucket = TruncMinute("taken_at") if line.step == MINUTE else TruncHour("taken_at")
    rows = (
        RateLimitSnapshot.objects.filter(which, taken_at__gte=line.first, taken_at__lt=line.last)
        .filter(headroom_pct__isnull=False)
        .annotate(at=bucket)
        .values("key_id", "model", "at")
        .annotate(low=Min("headroom_pct"))
        .order_by()
    )
    for row in rows:
        values, slot = series[(row["key_id"], row["model"])], line.slot(row["at"])
        values[slot] = row["low"] if values[slot] is None else min(values[slot], row["low"])
    return line, series


# ---- fine-tunes and batches --------------------------------------------------------------------------


def _finetunes_in(rng: Range) -> QuerySet[FineTuneJob]:
    """Jobs still running, and those whose status changed within the range."""
    changed = Q(status_changed_at__gte=rng.start, status_changed_at__lt=rng.end)
    jobs = FineTuneJob.objects.filter(changed | ~Q(status__in=FineTuneStatus.TERMINAL))
    if rng.key_id is not None:
        jobs = jobs.filter(upstream_key_id=rng.key_id)
    if rng.model:
        jobs = jobs.filter(base_model=rng.model)
    return jobs


def finetune_status_counts(rng: Range) -> list[tuple[str, int]]:
    """(status, count) in the order a job moves through them; unknown statuses last."""
    counts = dict(_finetunes_in(rng).values_list("status").annotate(n=Count("id")).order_by())
    order = {status: index for index, status in enumerate(FineTuneStatus.ALL)}
    return sorted(counts.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))


def finetune_jobs(rng: Range, limit: int = OVERVIEW_ROWS) -> list[FineTuneJob]:
    """Running jobs first, then the most recently changed."""
    finished = Case(
        When(status__in=FineTuneStatus.TERMINAL, then=Value(1)), default=Value(0), output_field=IntegerField()
    )
    jobs = _finetunes_in(rng).annotate(finished=finished).order_by("finished", "-status_changed_at", "-id")
    return list(jobs[:limit])


def finetune_events(job: FineTuneJob) -> tuple[list[FineTuneEvent], bool]:
    """The job's events, oldest first, capped; True when some were left out."""
    events = list(job.events.order_by("-created_at", "-id")[: EVENT_CAP + 1])
    return list(reversed(events[:EVENT_CAP])), len(events) > EVENT_CAP


def batch_jobs(status: str | None) -> QuerySet[BatchJob]:
    jobs = BatchJob.objects.select_related("upstream_key")
    return jobs.filter(status=status) if status else jobs


# ---- error groups ------------------------------------------------------------------------------------


def top_error_groups(rng: Range, limit: int = OVERVIEW_ROWS) -> list[ErrorGroup]:
    """Open groups seen in the range, most frequent first."""
    groups = ErrorGroup.objects.filter(
        state=ErrorGroup.State.OPEN, last_seen__gte=rng.start, first_seen__lt=rng.end
    )
    if rng.key_id is not None:
        groups = groups.filter(upstream_key_id=rng.key_id)
    if rng.model:
        groups = groups.filter(model=rng.model)
    return list(groups.order_by("-count", "-last_seen")[:limit])


def error_groups(
    rng: Range, state: str | None, category: str | None, kind: str | None, sort: str
) -> QuerySet[ErrorGroup]:
    """Groups seen within the range, filtered and sorted (last_seen, first_seen or count)."""
    filters = listing.GroupFilters(
        state=state, category=category, kind=kind, model=rng.model, key_id=rng.key_id, since=rng.start
    )
    return listing.error_groups(filters, sort).filter(first_seen__lt=rng.end).select_related("upstream_key")


@dataclass(frozen=True, slots=True)
class Occurrences:
    timeline: Timeline
    counts: list[int]
    capped: bool


def occurrences(group: ErrorGroup, rng: Range, now: datetime | None = None) -> Occurrences:
    """A group's occurrences per bucket, from its newest OCCURRENCE_CAP logs in the range.

    Rollups are not kept per group, so this reads the group's logs through the partial
    (error_group, created_at, id) index, newest first and capped, which bounds it however busy it is.
    """
    line = timeline(rng, now)
    logs = RequestLog.objects.filter(
        error_group_id=group.id, created_at__gte=rng.start, created_at__lt=rng.end
    )
    stamps = list(logs.order_by("-created_at", "-id").values_list("created_at", flat=True)[:OCCURRENCE_CAP])
    counts = [0] * line.count
    for stamp in stamps:
        counts[line.slot(stamp)] += 1
    return Occurrences(line, counts, len(stamps) >= OCCURRENCE_CAP)


def recent_occurrences(group: ErrorGroup, limit: int = RECENT_OCCURRENCES) -> list[RequestLog]:
    return list(RequestLog.objects.filter(error_group_id=group.id).order_by("-created_at", "-id")[:limit])


@dataclass(frozen=True, slots=True)
class Suggestion:
    """A model to try instead, and why; shown to people, never applied to requests."""

    model_id: str
    reason: str


_SAME_FAMILY_KINDS = ("model_overloaded", "service_unavailable", "model_not_available", "permission_denied")


def suggested_alternative(group: ErrorGroup) -> Suggestion | None:
    """A successor for a missing or removed model, a same-family model for an overloaded one."""
    if not group.model:
        return None
    known = ModelInfo.objects.filter(model_id=group.model).first()
    if group.kind == "model_not_found" or (known is not None and known.is_removed):
        return _replacement(group.model, known)
    if known is None:
        return None
    if group.kind in _SAME_FAMILY_KINDS:
        return _same_family(known, "An available model of the same family.")
    if group.kind == "token_limit_exceeded":
        return _same_family(known, "A model of the same family with a longer context.", larger_context=True)
    return None


def _replacement(model_id: str, known: ModelInfo | None) -> Suggestion | None:
    successor = (known.successor if known else "") or suggest_successor(model_id)
    if successor:
        return Suggestion(successor, "The catalog's successor for this model.")
    similar = close_matches(model_id, n=1)
    return Suggestion(similar[0], "The closest model id in the catalog.") if similar else None


def _same_family(known: ModelInfo, reason: str, larger_context: bool = False) -> Suggestion | None:
    candidates = ModelInfo.objects.filter(organization=known.organization).exclude(
        state=ModelInfo.State.REMOVED
    )
    if larger_context and known.context_length:
        candidates = candidates.filter(context_length__gt=known.context_length)
    other = successor_for(known, candidates)
    return Suggestion(other.model_id, reason) if other else None


# ---- request logs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestPage:
    rows: list[RequestLog]
    older: str | None  # cursor for ?older_than=
    newer: str | None  # cursor for ?newer_than=


def request_page(
    span: listing.Window,
    filters: listing.RequestFilters,
    older_than: str | None = None,
    newer_than: str | None = None,
    limit: int = REQUEST_PAGE_SIZE,
) -> RequestPage:
    """One keyset page of logs, newest first, with cursors to the older and newer pages."""
    if newer_than:
        return _newer_page(span, filters, newer_than, limit)
    rows, older = listing.page(span, filters, limit, older_than)
    newer = listing.encode_cursor(rows[0]) if older_than and rows else None
    return RequestPage(rows, older, newer)


def _newer_page(
    span: listing.Window, filters: listing.RequestFilters, cursor: str, limit: int
) -> RequestPage:
    created_at, log_id = listing.decode_cursor(cursor)
    logs = listing.request_logs(span, filters).filter(created_at__gte=created_at)
    logs = logs.filter(Q(created_at__gt=created_at) | Q(id__gt=log_id)).order_by("created_at", "id")
    found = list(logs[: limit + 1])
    if len(found) <= limit:
        return request_page(span, filters, limit=limit)  # back at the top: show the full newest page
    rows = list(reversed(found[:limit]))
    return RequestPage(rows, listing.encode_cursor(rows[-1]), listing.encode_cursor(rows[0]))


# ---- models ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CatalogRow:
    model: ModelInfo
    usage: Figures


def catalog_rows(traffic: dict[str, Figures], state: str | None, model_type: str | None) -> list[CatalogRow]:
    """Catalog models with our traffic (figures_by model), busiest first."""
    models = ModelInfo.objects.all()
    if state:
        models = models.filter(state=state)
    if model_type:
        models = models.filter(type=model_type)
    rows = [CatalogRow(model, traffic.get(model.model_id, Figures())) for model in models]
    return sorted(rows, key=lambda row: (-row.usage.requests, row.model.model_id))


def uncatalogued_traffic(traffic: dict[str, Figures]) -> list[tuple[str, Figures]]:
    """Models our traffic asked for that the catalog does not know (typos, private or removed ids)."""
    known = set(ModelInfo.objects.filter(model_id__in=list(traffic)).values_list("model_id", flat=True))
    unknown = [(model, usage) for model, usage in traffic.items() if model and model not in known]
    return sorted(unknown, key=lambda item: -item[1].requests)


def model_types() -> list[str]:
    return list(ModelInfo.objects.exclude(type="").order_by("type").values_list("type", flat=True).distinct())


def model_ids() -> list[str]:
    return list(ModelInfo.objects.order_by("model_id").values_list("model_id", flat=True))


def recent_model_changes(limit: int = CHANGES_SHOWN) -> list[ModelChange]:
    return list(ModelChange.objects.select_related("model")[:limit])


# ---- keys, pollers, proxy ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyUsage:
    key: TogetherKey
    usage: Figures
    tightest: Headroom | None
    open_groups: int


def key_usage(rng: Range) -> list[KeyUsage]:
    """Every upstream key with its traffic over the range, its tightest headroom and open error groups."""
    everything = replace(rng, key_id=None, model=None)
    traffic = figures_by(everything, "upstream_key")
    tightest: dict[int, Headroom] = {}
    for headroom in latest_headroom(everything, limit=None):
        tightest.setdefault(headroom.key_id, headroom)
    open_groups = dict(
        ErrorGroup.objects.filter(state=ErrorGroup.State.OPEN)
        .values_list("upstream_key")
        .annotate(n=Count("id"))
        .order_by()
    )
    return [
        KeyUsage(key, traffic.get(key.id, Figures()), tightest.get(key.id), open_groups.get(key.id, 0))
        for key in TogetherKey.objects.all()
    ]


def keys_for_filter() -> list[TogetherKey]:
    return list(TogetherKey.objects.only("id", "name", "status"))


def poller_health() -> list[PollerHeartbeat]:
    return list(PollerHeartbeat.objects.all())


ALERTS_APP = "together_dash.alerts"
FIRING_ALERTS_SHOWN = 10


def firing_alerts(limit: int = FIRING_ALERTS_SHOWN) -> list[Any] | None:
    """The alerts firing now, newest first; None when the alerts app is not installed (no section)."""
    if not apps.is_installed(ALERTS_APP):
        return None
    # Looked up at call time: the dashboard runs, and imports, without the alerts app.
    alert = apps.get_app_config("alerts").get_model("Alert")
    firing = alert.objects.filter(state=alert.State.FIRING).select_related("rule")
    return list(firing.order_by("-fired_at", "-id")[:limit])


def dropped_logs() -> int:
    """Request logs the proxy had to drop (database away too long), as counted in the shared cache."""
    return dropped_logs_total()
