from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from together_dash.catalog.models import ModelInfo
from together_dash.dashboard import queries
from together_dash.dashboard.ranges import Range
from together_dash.traffic import listing
from together_dash.traffic.models import ErrorGroup, RequestLog, UsageHour, UsageMinute

from .conftest import LLAMA, QWEN, Seed

T0 = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


@pytest.fixture
def frozen(seed: Seed) -> Iterator[Seed]:
    with time_machine.travel(T0, tick=False):
        seed.now = T0
        yield seed


def last(span: timedelta, **filters: object) -> Range:
    return Range("custom", T0 - span, T0, **filters)


def test_short_ranges_chart_minutes_and_long_ones_merge_hours() -> None:
    hour = queries.timeline(last(timedelta(hours=1)), now=T0)
    day = queries.timeline(last(timedelta(hours=24)), now=T0)
    month = queries.timeline(last(timedelta(days=30)), now=T0)
    assert (hour.table, hour.size, hour.count) == (UsageMinute, timedelta(minutes=1), 60)
    assert (day.table, day.size, day.count) == (
        UsageHour,
        timedelta(hours=1),
        25,
    )  # 24 h from 12:30: 25 hours
    assert month.table is UsageHour and month.size == timedelta(hours=6) and month.count <= queries.MAX_POINTS


def test_ranges_older_than_the_minute_rollups_read_hours() -> None:
    old = Range("custom", T0 - timedelta(days=10), T0 - timedelta(days=10) + timedelta(hours=1))
    assert queries.timeline(old, now=T0).table is UsageHour


def test_figures_are_exact_to_the_minute_at_both_edges(frozen: Seed) -> None:
    key = frozen.key()
    frozen.logs(key, LLAMA, timedelta(minutes=10), 3)  # 12:20, inside
    frozen.logs(key, LLAMA, timedelta(hours=2, minutes=10), 4)  # 10:20, inside (whole hours part)
    frozen.logs(key, LLAMA, timedelta(hours=3, minutes=20), 5)  # 09:10: inside, in the first ragged hour
    frozen.logs(key, LLAMA, timedelta(hours=3, minutes=50), 6)  # 08:40: before the range, same hour rollup
    frozen.logs(key, LLAMA, timedelta(minutes=20), 2, kind="request_rate_limited")

    figures = queries.figures(Range("custom", T0 - timedelta(hours=3, minutes=30), T0))

    assert (figures.requests, figures.errors, figures.total_tokens) == (14, 2, 12 * 120)
    assert figures.error_rate == pytest.approx(2 / 14)


def test_figures_compare_with_the_period_before(frozen: Seed) -> None:
    key = frozen.key()
    frozen.logs(key, LLAMA, timedelta(hours=2), 10)
    frozen.logs(key, LLAMA, timedelta(hours=30), 4, kind="insufficient_credits")

    comparison = queries.compared_figures(last(timedelta(hours=24)))

    assert (comparison.current.requests, comparison.current.errors) == (10, 0)
    assert (comparison.previous.requests, comparison.previous.errors) == (4, 4)


def test_figures_and_series_never_read_request_logs(frozen: Seed) -> None:
    frozen.logs(frozen.key(), LLAMA, timedelta(minutes=5), 3, kind="model_overloaded")
    rng = last(timedelta(days=7))
    with CaptureQueriesContext(connection) as captured:
        queries.compared_figures(rng)
        queries.category_series(rng)
        queries.volume_series(rng)
        queries.figures_by(rng, "model")
    assert captured.captured_queries
    assert not [q for q in captured.captured_queries if RequestLog._meta.db_table in q["sql"]]


def test_category_series_counts_each_category_in_its_bucket(frozen: Seed) -> None:
    key = frozen.key()
    frozen.logs(key, LLAMA, timedelta(minutes=5), 3, kind="request_rate_limited")
    frozen.logs(key, LLAMA, timedelta(minutes=45), 2, kind="insufficient_credits")
    frozen.logs(key, QWEN, timedelta(minutes=45), 1, kind="model_not_found")

    series = queries.category_series(last(timedelta(hours=1)))
    llama_only = queries.category_series(last(timedelta(hours=1), model=LLAMA))

    line = series.timeline
    assert series.values["rate_limit"][line.slot(T0 - timedelta(minutes=5))] == 3
    assert series.values["billing"][line.slot(T0 - timedelta(minutes=45))] == 2
    assert {category: sum(v) for category, v in series.values.items() if sum(v)} == {
        "rate_limit": 3,
        "billing": 2,
        "validation": 1,
    }
    assert sum(llama_only.values["validation"]) == 0


def test_a_month_is_charted_in_merged_buckets_with_every_request_counted(frozen: Seed) -> None:
    key = frozen.key()
    for days in (1, 9, 20, 29):
        frozen.logs(key, LLAMA, timedelta(days=days), 2)
    series = queries.volume_series(last(timedelta(days=30)))
    assert sum(series.values["requests"]) == 8
    assert len(series.values["requests"]) == series.timeline.count <= queries.MAX_POINTS


def test_latest_headroom_takes_each_pairs_newest_snapshot_tightest_first(frozen: Seed) -> None:
    prod, batch = frozen.key("prod"), frozen.key("batch")
    frozen.snapshot(prod, "", 80.0, timedelta(minutes=40))
    frozen.snapshot(prod, "", 60.0, timedelta(minutes=2))
    frozen.snapshot(prod, LLAMA, 12.0, timedelta(minutes=1))
    frozen.snapshot(prod, LLAMA, 30.0, timedelta(minutes=1), source="proxy")  # same instant: tighter wins
    frozen.snapshot(batch, "", 3.0, timedelta(minutes=5))
    frozen.snapshot(batch, QWEN, 1.0, timedelta(hours=3))  # too old to count as current

    bars = queries.latest_headroom(last(timedelta(hours=24)))

    assert [(b.key_name, b.model, b.headroom_pct, b.level) for b in bars] == [
        ("batch", "", 3.0, "critical"),
        ("prod", LLAMA, 12.0, "low"),
        ("prod", "", 60.0, "ok"),
    ]


def test_headroom_trend_keeps_the_lowest_value_per_bucket(frozen: Seed) -> None:
    key = frozen.key()
    frozen.snapshot(key, "", 70.0, timedelta(minutes=10, seconds=10))
    frozen.snapshot(key, "", 40.0, timedelta(minutes=10, seconds=40))
    line, trend = queries.headroom_trend(last(timedelta(hours=1)), [(key.id, "")])
    values = trend[(key.id, "")]
    assert values[line.slot(T0 - timedelta(minutes=10, seconds=40))] == 40.0
    assert [v for v in values if v is not None] == [40.0]


def test_finetune_counts_include_running_jobs_and_those_that_changed_in_range(frozen: Seed) -> None:
    frozen.finetune("ft-run", "running", (5, 10))
    frozen.finetune("ft-old-run", "running", (1, 10), status_changed_at=T0 - timedelta(days=5))
    frozen.finetune("ft-done", "completed", (10, 10))
    frozen.finetune("ft-done-long-ago", "completed", (10, 10), status_changed_at=T0 - timedelta(days=5))

    counts = queries.finetune_status_counts(last(timedelta(hours=24)))
    jobs = queries.finetune_jobs(last(timedelta(hours=24)))

    assert counts == [("running", 2), ("completed", 1)]
    assert [job.job_id for job in jobs] == ["ft-run", "ft-old-run", "ft-done"]


def test_occurrences_are_bucketed_and_capped(frozen: Seed, monkeypatch: pytest.MonkeyPatch) -> None:
    frozen.logs(frozen.key(), LLAMA, timedelta(minutes=3), 5, kind="model_overloaded")
    group = ErrorGroup.objects.get()
    found = queries.occurrences(group, last(timedelta(hours=1)))
    assert (sum(found.counts), found.capped) == (5, False)

    monkeypatch.setattr(queries, "OCCURRENCE_CAP", 2)
    capped = queries.occurrences(group, last(timedelta(hours=1)))
    assert (sum(capped.counts), capped.capped) == (2, True)


def test_a_removed_model_suggests_its_successor(seed: Seed) -> None:
    seed.model("meta-llama/Llama-3-70b-chat-hf", state=ModelInfo.State.REMOVED, successor=LLAMA)
    seed.logs(seed.key(), "meta-llama/Llama-3-70b-chat-hf", timedelta(minutes=1), 1, kind="model_not_found")
    suggestion = queries.suggested_alternative(ErrorGroup.objects.get())
    assert suggestion is not None and suggestion.model_id == LLAMA


def test_a_mistyped_model_suggests_the_closest_catalog_id(seed: Seed) -> None:
    seed.model(LLAMA)
    seed.logs(
        seed.key(), "meta-llama/Llama-3.3-70B-Instruct-Trubo", timedelta(minutes=1), 1, kind="model_not_found"
    )
    assert queries.suggested_alternative(ErrorGroup.objects.get()).model_id == LLAMA


def test_an_overloaded_model_suggests_another_of_its_family(seed: Seed) -> None:
    seed.model("meta-llama/Llama-3.1-8B-Instruct-Turbo", context_length=8192)
    seed.model(LLAMA)
    seed.model(QWEN)
    seed.logs(
        seed.key(), "meta-llama/Llama-3.1-8B-Instruct-Turbo", timedelta(minutes=1), 1, kind="model_overloaded"
    )
    assert queries.suggested_alternative(ErrorGroup.objects.get()).model_id == LLAMA


def test_no_suggestion_for_errors_a_model_change_would_not_fix(seed: Seed) -> None:
    seed.model(LLAMA)
    seed.logs(seed.key(), LLAMA, timedelta(minutes=1), 1, kind="invalid_api_key")
    assert queries.suggested_alternative(ErrorGroup.objects.get()) is None


def test_request_pages_walk_older_and_back_newer(frozen: Seed) -> None:
    frozen.logs(frozen.key(), LLAMA, timedelta(minutes=1), 7)
    span, filters = listing.Window(T0 - timedelta(hours=1), T0), listing.RequestFilters()
    newest_first = list(RequestLog.objects.order_by("-created_at", "-id").values_list("id", flat=True))

    first = queries.request_page(span, filters, limit=3)
    second = queries.request_page(span, filters, older_than=first.older, limit=3)
    back = queries.request_page(span, filters, newer_than=second.newer, limit=3)

    assert [log.id for log in first.rows] == newest_first[:3] and first.newer is None
    assert [log.id for log in second.rows] == newest_first[3:6] and second.newer
    assert [log.id for log in back.rows] == newest_first[:3] and back.newer is None


def test_a_newer_page_in_the_middle_keeps_both_cursors(frozen: Seed) -> None:
    frozen.logs(frozen.key(), LLAMA, timedelta(minutes=1), 9)
    span, filters = listing.Window(T0 - timedelta(hours=1), T0), listing.RequestFilters()
    newest_first = list(RequestLog.objects.order_by("-created_at", "-id").values_list("id", flat=True))
    third = queries.request_page(
        span,
        filters,
        older_than=queries.request_page(
            span, filters, older_than=queries.request_page(span, filters, limit=2).older, limit=2
        ).older,
        limit=2,
    )

    middle = queries.request_page(span, filters, newer_than=third.newer, limit=2)

    assert [log.id for log in middle.rows] == newest_first[2:4]
    assert middle.newer and middle.older


def test_catalog_rows_carry_our_traffic_and_unknown_models_are_listed(frozen: Seed) -> None:
    frozen.model(LLAMA)
    frozen.model(QWEN)
    key = frozen.key()
    frozen.logs(key, QWEN, timedelta(minutes=30), 4)
    frozen.logs(key, "llama-typo", timedelta(minutes=30), 2, kind="model_not_found")

    traffic = queries.figures_by(last(timedelta(hours=24)), "model")
    rows = queries.catalog_rows(traffic, None, None)
    unknown = queries.uncatalogued_traffic(traffic)

    assert [(row.model.model_id, row.usage.requests) for row in rows] == [(QWEN, 4), (LLAMA, 0)]
    assert [(model, usage.errors) for model, usage in unknown] == [("llama-typo", 2)]


def test_key_usage_lists_every_key_with_its_traffic_and_open_groups(frozen: Seed) -> None:
    prod = frozen.key("prod")
    frozen.key("idle")
    frozen.logs(prod, LLAMA, timedelta(minutes=30), 3, kind="request_rate_limited")
    frozen.logs(prod, LLAMA, timedelta(minutes=30), 1)
    frozen.snapshot(prod, LLAMA, 15.0, timedelta(minutes=1))

    rows = {row.key.name: row for row in queries.key_usage(last(timedelta(hours=24)))}

    assert (rows["prod"].usage.requests, rows["prod"].usage.errors, rows["prod"].open_groups) == (4, 3, 1)
    assert rows["prod"].tightest is not None and rows["prod"].tightest.headroom_pct == 15.0
    assert (rows["idle"].usage.requests, rows["idle"].tightest) == (0, None)
