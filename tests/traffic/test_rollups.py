from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from together_dash.keys.models import TogetherKey
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.models import UsageDay, UsageHour, UsageMinute
from together_dash.traffic.recording import record_entries
from together_dash.traffic.rollups import (
    align,
    pick_step,
    pieces,
    usage_breakdown,
    usage_series,
    usage_totals,
)

NOW = datetime(2026, 3, 1, 12, 30, 0, tzinfo=UTC)
T0 = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


@pytest.fixture
def upstream(db: None) -> TogetherKey:
    return TogetherKey.create("main", "tgp_" + "a" * 40)


def ok(upstream: TogetherKey | None, at: datetime = T0, **fields: object) -> LogEntry:
    values = {
        "created_at": at, "endpoint": "/v1/chat/completions",
        "upstream_key_id": upstream.id if upstream else None,
        "model_requested": MODEL, "status_code": 200, "latency_ms": 180.0,
        "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
    }
    return LogEntry(**{**values, **fields})


def failed(upstream: TogetherKey, status: int, category: str, at: datetime = T0, **fields: object
           ) -> LogEntry:
    values = {"status_code": status, "category": category, "kind": "k", "prompt_tokens": None,
              "completion_tokens": None, "total_tokens": None}
    return ok(upstream, at, **{**values, **fields})


# ---- rollup rows -------------------------------------------------------------------------------------

def test_rollups_count_requests_errors_tokens_and_latency(upstream: TogetherKey) -> None:
    record_entries([
        ok(upstream, latency_ms=50.0),
        ok(upstream, T0 + timedelta(seconds=20), latency_ms=300.0, prompt_tokens=None, total_tokens=None),
        failed(upstream, 429, "rate_limit", latency_ms=12_000.0),
        ok(upstream, T0 + timedelta(minutes=1), latency_ms=None),
        ok(upstream, model_requested="other-model"),
        ok(None),
    ])

    first = UsageMinute.objects.get(bucket=T0.replace(second=0), model=MODEL, upstream_key=upstream)
    assert (first.requests, first.errors_rate_limit, first.errors) == (3, 1, 1)
    assert (first.prompt_tokens, first.completion_tokens, first.total_tokens) == (10, 10, 15)
    assert (first.latency_count, first.latency_sum_ms) == (3, 12_350.0)
    assert (first.latency_le_100, first.latency_le_500, first.latency_gt_10000) == (1, 1, 1)
    second = UsageMinute.objects.get(bucket=T0.replace(second=0) + timedelta(minutes=1), model=MODEL)
    assert (second.requests, second.latency_count) == (1, 0)
    assert UsageMinute.objects.get(upstream_key=None).requests == 1
    hour = UsageHour.objects.get(bucket=T0.replace(minute=0, second=0), model=MODEL, upstream_key=upstream)
    assert (hour.requests, hour.errors_rate_limit, hour.latency_count) == (4, 1, 3)
    assert UsageHour.objects.count() == 3
    midnight = T0.replace(hour=0, minute=0, second=0)
    day = UsageDay.objects.get(bucket=midnight, model=MODEL, upstream_key=upstream)
    assert (day.requests, day.errors_rate_limit, day.latency_count, day.total_tokens) == (4, 1, 3, 30)
    assert UsageDay.objects.count() == 3


def test_day_rollups_take_each_request_in_its_utc_day(upstream: TogetherKey) -> None:
    late = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)
    india = timezone(timedelta(hours=5, minutes=30))
    record_entries([ok(upstream, late), ok(upstream, late + timedelta(seconds=1)),
                    ok(upstream, datetime(2026, 3, 2, 4, 0, tzinfo=india))])  # 22:30 UTC on the 1st
    days = dict(UsageDay.objects.values_list("bucket", "requests"))
    assert days == {datetime(2026, 3, 1, tzinfo=UTC): 2, datetime(2026, 3, 2, tzinfo=UTC): 1}


def test_each_latency_lands_in_exactly_one_histogram_bucket(upstream: TogetherKey) -> None:
    latencies = [100.0, 100.5, 250.0, 499.0, 1000.0, 2500.0, 4000.0, 10_000.0, 10_000.1]
    record_entries([ok(upstream, latency_ms=value) for value in latencies])

    row = UsageMinute.objects.get()
    histogram = [row.latency_le_100, row.latency_le_250, row.latency_le_500, row.latency_le_1000,
                 row.latency_le_2500, row.latency_le_5000, row.latency_le_10000, row.latency_gt_10000]
    assert histogram == [1, 2, 1, 1, 1, 1, 1, 1]


def test_rows_without_a_key_share_one_rollup_row_across_batches(db: None) -> None:
    for _ in range(3):
        record_entries([LogEntry(created_at=T0, endpoint="/v1/models", method="GET", status_code=200)])

    row = UsageMinute.objects.get()
    assert (row.upstream_key_id, row.model, row.requests) == (None, "", 3)
    assert (row.prompt_tokens, row.latency_count) == (0, 0)


def test_an_error_outside_the_taxonomy_counts_as_a_request_only(upstream: TogetherKey) -> None:
    record_entries([failed(upstream, 418, "teapot")])
    row = UsageMinute.objects.get()
    assert (row.requests, row.errors) == (1, 0)


# ---- reading them back -------------------------------------------------------------------------------

@time_machine.travel(NOW, tick=False)
def test_a_short_range_reads_minutes_and_a_long_one_hours() -> None:
    assert pick_step(NOW - timedelta(hours=1), NOW) == "minute"
    assert pick_step(NOW - timedelta(hours=3), NOW) == "minute"  # the pages' rule, which the API now shares
    assert pick_step(NOW - timedelta(hours=3, minutes=1), NOW) == "hour"
    assert pick_step(NOW - timedelta(hours=24), NOW) == "hour"
    assert pick_step(NOW - timedelta(days=10), NOW - timedelta(days=9, hours=12)) == "hour"  # minutes pruned


def test_a_month_reads_whole_days_then_hours_then_minutes_toward_its_edges() -> None:
    start, end = datetime(2026, 2, 1, 10, 30, 15, tzinfo=UTC), datetime(2026, 3, 3, 8, 20, 40, tzinfo=UTC)
    at = datetime.combine

    assert pieces(start, end, now=end) == [
        (UsageDay, datetime(2026, 2, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)),
        (UsageHour, at(start.date(), time(11), UTC), datetime(2026, 2, 2, tzinfo=UTC)),
        (UsageHour, at(start.date(), time(10), UTC), at(start.date(), time(11), UTC)),  # minutes pruned
        (UsageHour, datetime(2026, 3, 3, tzinfo=UTC), at(end.date(), time(8), UTC)),
        (UsageMinute, at(end.date(), time(8), UTC), at(end.date(), time(8, 21), UTC)),
    ]


def test_align_rounds_out_to_whole_buckets() -> None:
    minute = T0.replace(second=0)
    assert align(T0, T0 + timedelta(seconds=10), "minute") == (minute, minute + timedelta(minutes=1))
    hour = T0.replace(minute=0, second=0)
    assert align(T0, T0 + timedelta(hours=2), "hour") == (hour, hour + timedelta(hours=3))
    assert align(hour, hour + timedelta(hours=1), "hour") == (hour, hour + timedelta(hours=1))


def test_align_works_in_utc_whatever_offset_the_caller_used() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    first, last = align(T0.astimezone(india), T0.astimezone(india) + timedelta(hours=1), "hour")
    hour = T0.replace(minute=0, second=0)
    assert (first, last) == (hour, hour + timedelta(hours=2))
    assert first.tzinfo == UTC


@time_machine.travel(NOW, tick=False)
def test_a_series_has_every_bucket_with_totals_and_errors_per_category(upstream: TogetherKey) -> None:
    start = T0.replace(second=0)
    record_entries([
        ok(upstream), ok(upstream),
        failed(upstream, 402, "billing", T0 + timedelta(minutes=2)),
        failed(upstream, 503, "server", T0 + timedelta(minutes=2)),
    ])

    series = usage_series(start, start + timedelta(minutes=4))

    assert series.step == "minute"
    assert [p.bucket for p in series.points] == [start + timedelta(minutes=n) for n in range(4)]
    assert [p.counts.requests for p in series.points] == [2, 0, 2, 0]
    third = series.points[2].counts
    assert third.errors == 2
    assert (third.errors_by_category["billing"], third.errors_by_category["server"]) == (1, 1)
    assert third.errors_by_category["auth"] == 0
    assert series.points[0].counts.total_tokens == 30
    assert series.totals.requests == 4


@time_machine.travel(NOW, tick=False)
def test_series_and_totals_filter_by_key_and_model(upstream: TogetherKey) -> None:
    other = TogetherKey.create("other", "tgp_" + "b" * 40)
    record_entries([ok(upstream), ok(upstream, model_requested="m2"), ok(other), ok(other)])
    start, end = T0 - timedelta(minutes=5), T0 + timedelta(minutes=5)

    assert usage_totals(start, end).requests == 4
    assert usage_totals(start, end, key_id=other.id).requests == 2
    assert usage_totals(start, end, key_id=upstream.id, model="m2").requests == 1
    assert sum(p.counts.requests for p in usage_series(start, end, model=MODEL).points) == 3
    by_model = usage_breakdown(start, end, by="model")
    assert (by_model[MODEL].requests, by_model["m2"].requests) == (3, 1)


@time_machine.travel(NOW + timedelta(days=5), tick=False)
def test_ranges_beyond_a_day_read_hour_rollups(upstream: TogetherKey) -> None:
    record_entries([ok(upstream), ok(upstream, T0 + timedelta(hours=3))])
    UsageMinute.objects.all().delete()  # as retention would have done by now

    series = usage_series(T0 - timedelta(days=1), T0 + timedelta(days=1))

    assert series.step == "hour"
    assert len(series.points) == 49
    assert series.totals.requests == 2
    assert usage_totals(T0 - timedelta(days=2), T0 + timedelta(days=2)).requests == 2


@time_machine.travel(NOW, tick=False)
def test_totals_carry_cost_and_a_latency_estimate(upstream: TogetherKey) -> None:
    UsageMinute.objects.create(
        bucket=T0.replace(second=0), upstream_key=upstream, model=MODEL, requests=20, cost_usd=Decimal("0.5"),
        latency_sum_ms=4000.0, latency_count=20, latency_le_100=10, latency_le_250=8, latency_le_1000=2,
    )
    totals = usage_totals(T0 - timedelta(minutes=1), T0 + timedelta(minutes=1))

    assert totals.cost_usd == Decimal("0.5")
    assert totals.latency_avg_ms == 200.0
    assert totals.latency_percentile_ms(0.5) == 100.0
    assert totals.latency_percentile_ms(0.95) == 1000.0
    assert totals.error_rate == 0.0


def test_reading_usage_never_touches_the_request_log(upstream: TogetherKey) -> None:
    record_entries([ok(upstream)])
    with CaptureQueriesContext(connection) as queries:
        usage_series(T0 - timedelta(hours=1), T0 + timedelta(hours=1))
        usage_totals(T0 - timedelta(days=20), T0)
    assert queries.captured_queries
    assert not any("traffic_requestlog" in query["sql"] for query in queries.captured_queries)


def test_minute_steps_are_refused_beyond_a_day(db: None) -> None:
    with pytest.raises(ValueError, match="24 hours"):
        usage_series(T0 - timedelta(days=2), T0, step="minute")
