"""backfill_costs: requests logged before their model had a price get their cost once it has one, and
the minute, hour and day rollups move with them."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db.models import Sum

from together_dash.catalog.models import ModelInfo
from together_dash.keys.models import TogetherKey
from together_dash.traffic.backfill import backfill_costs
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.models import RequestLog, UsageDay, UsageHour, UsageMinute, is_unpriced
from together_dash.traffic.recording import record_entries
from together_dash.traffic.rollups import DAY, HOUR, MINUTE, floor_to

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
LATE = "org/late-priced"
PRICED = "org/priced"


@pytest.fixture
def keys() -> list[TogetherKey]:
    return [TogetherKey.create(name, f"secret-{name}-" + "x" * 30) for name in ("a", "b")]


def entry(key: TogetherKey | None, model: str, at: datetime, **fields: object) -> LogEntry:
    values = {
        "created_at": at, "endpoint": "/v1/chat/completions", "upstream_key_id": key.id if key else None,
        "model_requested": model, "status_code": 200, "latency_ms": 100.0,
        "prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
    }
    return LogEntry(**{**values, **fields})


def traffic(keys: list[TogetherKey]) -> None:
    ModelInfo.objects.create(model_id=PRICED, pricing_input=Decimal("1"), pricing_output=Decimal("2"))
    ModelInfo.objects.create(model_id=LATE)  # in the catalog, no price yet
    record_entries([
        entry(keys[0], LATE, T0),
        entry(keys[0], LATE, T0 + timedelta(seconds=70), prompt_tokens=4000, cached_tokens=3000),
        entry(keys[1], LATE, T0 + timedelta(minutes=30)),
        entry(None, LATE, T0 + timedelta(hours=1, minutes=2)),
        entry(keys[0], LATE, T0, status_code=429, category="rate_limit", kind="rate_limited",
              prompt_tokens=None, completion_tokens=None, total_tokens=None),
        entry(keys[0], PRICED, T0),
    ])


def rollups_match_rows() -> None:
    """Every rollup row's cost and unpriced count are exactly those of the logs in its bucket."""
    for table, size in ((UsageMinute, MINUTE), (UsageHour, HOUR), (UsageDay, DAY)):
        expected: dict[tuple, list] = defaultdict(lambda: [Decimal(0), 0])
        for log in RequestLog.objects.all():
            sums = expected[(floor_to(log.created_at, size), log.upstream_key_id, log.model_requested)]
            sums[0] += log.cost_usd or 0
            tokens = (log.prompt_tokens, log.completion_tokens)
            sums[1] += is_unpriced(log.cost_usd, *tokens, log.model_requested)
        rows = table.objects.all()
        found = {(r.bucket, r.upstream_key_id, r.model): [r.cost_usd, r.unpriced_requests] for r in rows}
        assert found == dict(expected), table.__name__


def test_rows_logged_before_the_price_are_counted_unpriced_and_cost_nothing(keys: list[TogetherKey]) -> None:
    traffic(keys)

    assert RequestLog.objects.filter(model_requested=LATE, cost_usd__isnull=False).count() == 0
    assert UsageDay.objects.aggregate(n=Sum("unpriced_requests"))["n"] == 4
    assert UsageDay.objects.get(model=PRICED).unpriced_requests == 0
    rollups_match_rows()


def test_a_price_that_arrives_later_fills_the_rows_and_the_rollups(keys: list[TogetherKey]) -> None:
    traffic(keys)
    ModelInfo.objects.filter(model_id=LATE).update(
        pricing_input=Decimal("0.88"), pricing_output=Decimal("0.88"), pricing_cached_input=Decimal("0.44")
    )
    ModelInfo.objects.get(model_id=LATE).save()  # a write through save(): every process re-reads prices

    result = backfill_costs(now=T0 + timedelta(hours=2))

    assert (result.costed, result.places) == (4, 2)
    costs = list(RequestLog.objects.filter(model_requested=LATE).order_by("created_at", "id")
                 .values_list("cost_usd", flat=True))
    # 1000 x 0.88 + 200 x 0.88; the 429 (no tokens); 1000 fresh x 0.88 + 3000 cached x 0.44 + 200 x 0.88
    assert costs[:3] == [Decimal("0.00105600"), None, Decimal("0.00237600")]
    assert costs[3:] == [Decimal("0.00105600"), Decimal("0.00105600")]
    assert UsageDay.objects.aggregate(n=Sum("unpriced_requests"))["n"] == 0
    rollups_match_rows()


def test_a_second_run_costs_nothing_twice(keys: list[TogetherKey]) -> None:
    traffic(keys)
    ModelInfo.objects.filter(model_id=LATE).update(pricing_input=Decimal("1"), pricing_output=Decimal("1"))
    ModelInfo.objects.get(model_id=LATE).save()
    backfill_costs(now=T0 + timedelta(hours=2))
    day_cost = UsageDay.objects.aggregate(c=Sum("cost_usd"))["c"]

    again = backfill_costs(now=T0 + timedelta(hours=2))

    assert again.costed == 0
    assert UsageDay.objects.aggregate(c=Sum("cost_usd"))["c"] == day_cost
    rollups_match_rows()


def test_it_works_through_a_place_in_small_batches(keys: list[TogetherKey]) -> None:
    ModelInfo.objects.create(model_id=LATE)
    record_entries([entry(keys[0], LATE, T0 + timedelta(seconds=n)) for n in range(7)])
    ModelInfo.objects.filter(model_id=LATE).update(pricing_input=Decimal("1"), pricing_output=Decimal("1"))
    ModelInfo.objects.get(model_id=LATE).save()

    result = backfill_costs(batch_size=2, now=T0 + timedelta(hours=1))

    assert result.costed == 7
    rollups_match_rows()


def test_a_model_still_without_a_price_is_left_alone(keys: list[TogetherKey]) -> None:
    traffic(keys)

    assert backfill_costs(now=T0 + timedelta(hours=2)).costed == 0
    assert UsageDay.objects.aggregate(n=Sum("unpriced_requests"))["n"] == 4


def test_hours_past_request_log_retention_are_not_looked_at(
    keys: list[TogetherKey], settings: object
) -> None:
    traffic(keys)
    ModelInfo.objects.filter(model_id=LATE).update(pricing_input=Decimal("1"), pricing_output=Decimal("1"))
    ModelInfo.objects.get(model_id=LATE).save()

    later = T0 + timedelta(days=settings.REQUEST_LOG_RETENTION_DAYS + 1)
    assert backfill_costs(now=later).costed == 0


def test_the_command_runs_the_same_backfill(
    keys: list[TogetherKey], capsys: pytest.CaptureFixture[str]
) -> None:
    ModelInfo.objects.create(model_id=LATE)
    record_entries([entry(keys[0], LATE, datetime.now(UTC))])
    ModelInfo.objects.filter(model_id=LATE).update(pricing_input=Decimal("1"), pricing_output=Decimal("1"))
    ModelInfo.objects.get(model_id=LATE).save()

    call_command("backfill_costs")

    assert "1 request logs costed" in capsys.readouterr().out
    assert RequestLog.objects.get().cost_usd == Decimal("0.00120000")
