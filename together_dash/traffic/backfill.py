"""Fill in the cost of requests logged while their model had no price, once the catalog has one.

The rollups say where to look: an hour whose unpriced_requests is above zero holds request logs with
token counts and no cost (models.is_unpriced). For each such (hour, model) whose model is priced now,
and still within request-log retention, the logs are costed in bounded batches; each batch, in one
transaction, sets the logs' cost and moves the same amounts into the minute, hour and day rollups
(cost up, unpriced_requests down), so the rollups keep adding up to the rows. A log is only costed
while its cost is still NULL, and the run holds its lease, so no cost is ever counted twice.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from together_dash.catalog.pricing import PriceTable, prices
from together_dash.pollers.runs import PollReport, run_poller
from together_dash.traffic.models import (
    AppKeySpendHour,
    RequestLog,
    UsageDay,
    UsageHour,
    UsageMinute,
    UsageRollup,
)
from together_dash.traffic.recording import log_cost
from together_dash.traffic.rollups import DAY, HOUR, MINUTE, floor_to

logger = logging.getLogger(__name__)

# Its name in pollers/schedule.py: the periodic task's heartbeat, and the lease that keeps runs apart.
TASK_NAME = "backfill_costs"
BATCH_SIZE = 500

_FIELDS = ("id", "created_at", "upstream_key_id", "app_key_id", "model_requested", "model_served",
           "prompt_tokens", "completion_tokens", "cached_tokens")


@dataclass(frozen=True, slots=True)
class BackfillResult:
    """How many request logs got their cost, and in how many (hour, model) places."""

    costed: int
    places: int


def backfill_costs(batch_size: int = BATCH_SIZE, now: datetime | None = None) -> BackfillResult:
    """Cost every unpriced request log whose model has a price now; rollups follow in the same batches."""
    now = now or timezone.now()
    table = prices()
    costed = places = 0
    for hour, model in unpriced_places(table, now):
        filled = _backfill_place(hour, model, table, batch_size)
        costed += filled
        places += 1 if filled else 0
    if costed:
        logger.info("Costed %d request logs logged before their model had a price", costed)
    return BackfillResult(costed, places)


def scheduled_backfill(token: str | None = None, batch_size: int = BATCH_SIZE) -> BackfillResult | None:
    """backfill_costs() under the task's lease, recording its heartbeat; None if another run holds it."""
    results: list[BackfillResult] = []

    def body(report: PollReport) -> None:
        results.append(backfill_costs(batch_size))
        report.count("costed", results[0].costed)

    run_poller(TASK_NAME, body, token)
    return results[0] if results else None


def unpriced_places(table: PriceTable, now: datetime) -> list[tuple[datetime, str]]:
    """(hour, model) pairs with unpriced requests, still within retention, whose model has a price now.

    The rollup's model is the one requested and a log is priced by the one served: the same model but
    for a redirect, whose logs are left as they are.
    """
    kept_since = now - timedelta(days=settings.REQUEST_LOG_RETENTION_DAYS)
    rows = UsageHour.objects.filter(unpriced_requests__gt=0, bucket__gte=floor_to(kept_since, HOUR))
    pairs = sorted(set(rows.values_list("bucket", "model")))
    return [(hour, model) for hour, model in pairs if _priced(table, model)]


def _priced(table: PriceTable, model: str) -> bool:
    if model in table.per_minute:
        return True  # a dedicated endpoint: nothing per token (catalog/pricing.py)
    price = table.get(model)
    return price is not None and price.input is not None and price.output is not None


def _backfill_place(hour: datetime, model: str, table: PriceTable, batch_size: int) -> int:
    """Cost the hour's unpriced logs of one model, a batch per transaction; returns how many were costed."""
    costed, after_id = 0, 0
    while True:
        filled, last_id, complete = _backfill_batch(hour, model, table, batch_size, after_id)
        costed += filled
        if complete:
            return costed
        after_id = last_id


@transaction.atomic
def _backfill_batch(
    hour: datetime, model: str, table: PriceTable, batch_size: int, after_id: int
) -> tuple[int, int, bool]:
    """One batch: (logs costed, the last id looked at, whether the place has no more candidates)."""
    candidates = list(
        _candidates(hour, model)
        .filter(id__gt=after_id)
        .select_for_update(skip_locked=True)
        .order_by("id")
        .only(*_FIELDS)[:batch_size]
    )
    costed: list[RequestLog] = []
    for log in candidates:
        cost = log_cost(
            table, log.model_requested, log.model_served, log.prompt_tokens, log.completion_tokens,
            log.cached_tokens,
        )
        if cost is not None:
            log.cost_usd = cost
            costed.append(log)
    RequestLog.objects.bulk_update(costed, ["cost_usd"], batch_size=batch_size)
    _move_into_rollups(costed, model)
    last_id = candidates[-1].id if candidates else after_id
    return len(costed), last_id, len(candidates) < batch_size


def _candidates(hour: datetime, model: str):  # noqa: ANN202 (a RequestLog queryset)
    """The hour's logs of the rollup model that is_unpriced() counted: token counts and no cost."""
    of_model = Q(model_requested=model) | (Q(model_requested="") & Q(model_served=model))
    return RequestLog.objects.filter(
        of_model,
        created_at__gte=hour,
        created_at__lt=hour + HOUR,
        cost_usd__isnull=True,
        prompt_tokens__isnull=False,
        completion_tokens__isnull=False,
    ).exclude(model_requested="", model_served="")


def _move_into_rollups(costed: Iterable[RequestLog], model: str) -> None:
    """Add each log's cost to its minute, hour and day, and take it off their unpriced count."""
    for table, size in ((UsageMinute, MINUTE), (UsageHour, HOUR), (UsageDay, DAY)):
        sums: dict[tuple[datetime, int | None], tuple[Decimal, int]] = {}
        for log in costed:
            key = (floor_to(log.created_at, size), log.upstream_key_id)
            cost, count = sums.get(key, (Decimal(0), 0))
            sums[key] = (cost + (log.cost_usd or 0), count + 1)
        for (bucket, key_id), (cost, count) in sorted(sums.items(), key=lambda item: str(item[0])):
            _add_cost(table, bucket, key_id, model, cost, count)
    _move_into_app_key_spend(costed)


def _move_into_app_key_spend(costed: Iterable[RequestLog]) -> None:
    """The same for the app keys' hours, which app-key budgets read."""
    sums: dict[tuple[int, datetime], tuple[Decimal, int]] = {}
    for log in costed:
        if log.app_key_id is None:
            continue
        key = (log.app_key_id, floor_to(log.created_at, HOUR))
        cost, count = sums.get(key, (Decimal(0), 0))
        sums[key] = (cost + (log.cost_usd or 0), count + 1)
    for (app_key_id, bucket), (cost, count) in sorted(sums.items()):
        AppKeySpendHour.objects.filter(app_key_id=app_key_id, bucket=bucket).update(
            cost_usd=F("cost_usd") + cost, unpriced_requests=F("unpriced_requests") - count
        )


def _add_cost(
    table: type[UsageRollup], bucket: datetime, key_id: int | None, model: str, cost: Decimal, count: int
) -> None:
    # A minute already pruned by retention has no row to correct: the hour and day rows still do.
    table.objects.filter(bucket=bucket, upstream_key_id=key_id, model=model).update(
        cost_usd=F("cost_usd") + cost, unpriced_requests=F("unpriced_requests") - count
    )

