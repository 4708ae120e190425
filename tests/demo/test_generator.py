"""The request-log generator: realistic traffic, and rollups and error groups equal to the logs themselves.

The load runs on whatever database the suite runs on: binary COPY plus set-based SQL on PostgreSQL (the
CI's second pass), record_entries() on SQLite. Every test holds for both.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from together_dash.demo.generator import (
    UNKNOWN_MODELS,
    allot,
    generate_request_logs,
    minute_rollups_since,
    minute_weight,
)
from together_dash.keys.models import TogetherKey
from together_dash.simulator import catalog
from together_dash.together.errors import TAXONOMY
from together_dash.traffic.models import (
    COUNTER_COLUMNS,
    LATENCY_BOUNDS_MS,
    LATENCY_COLUMNS,
    ErrorGroup,
    RequestLog,
    UsageDay,
    UsageHour,
    UsageMinute,
    UsageRollup,
    is_unpriced,
)

NOW = datetime(2026, 3, 3, 12, 30, 17, tzinfo=UTC)  # a Tuesday
EXPECTED_METHOD = "copy" if connection.vendor == "postgresql" else "record_entries"


def generate(count: int = 3000, **options: object) -> None:
    options = {"days": 2, "keys": 3, "seed": 7, "now": NOW, **options}
    result = generate_request_logs(count, **options)
    assert (result.rows, result.method) == (count, EXPECTED_METHOD)


def bucket_of(at: datetime, step: str) -> datetime:
    at = at.replace(second=0, microsecond=0)
    if step == "day":
        return at.replace(hour=0, minute=0)
    return at.replace(minute=0) if step == "hour" else at


def latency_column(latency: float) -> str:
    for bound, column in zip(LATENCY_BOUNDS_MS, LATENCY_COLUMNS, strict=False):
        if latency <= bound:
            return column
    return LATENCY_COLUMNS[-1]


def aggregate_logs(step: str, since: datetime | None = None) -> dict[tuple, Counter]:
    """Rollup counters computed straight from the RequestLog rows, in plain Python."""
    totals: dict[tuple, Counter] = {}
    for log in RequestLog.objects.all():
        bucket = bucket_of(log.created_at, step)
        if since is not None and bucket < since:
            continue
        counts = totals.setdefault(
            (bucket, log.upstream_key_id, log.model_requested or log.model_served), Counter()
        )
        counts["requests"] += 1
        if log.category:
            counts[f"errors_{log.category}"] += 1
        for column in ("prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"):
            counts[column] += getattr(log, column) or 0
        priced_by = log.model_served or log.model_requested
        tokens = (log.prompt_tokens, log.completion_tokens)
        counts["unpriced_requests"] += is_unpriced(log.cost_usd, *tokens, priced_by)
        if log.latency_ms is not None:
            counts["latency_count"] += 1
            counts["latency_sum_ms"] += log.latency_ms
            counts[latency_column(log.latency_ms)] += 1
    return totals


def stored_rollups(model: type[UsageRollup]) -> dict[tuple, Counter]:
    return {
        (row.bucket, row.upstream_key_id, row.model): Counter({c: getattr(row, c) for c in COUNTER_COLUMNS})
        for row in model.objects.all()
    }


def assert_rollups_match(model: type[UsageRollup], expected: dict[tuple, Counter]) -> None:
    stored = stored_rollups(model)
    assert stored.keys() == expected.keys()
    for bucket, counts in expected.items():
        row = stored[bucket]
        assert row.pop("latency_sum_ms") == pytest.approx(counts.pop("latency_sum_ms", 0.0))
        assert +row == +counts, bucket  # unary + drops the zero counters on both sides


def assert_groups_match_logs() -> None:
    errors = list(RequestLog.objects.exclude(category="").order_by("created_at", "id"))
    assert not RequestLog.objects.filter(category="", error_group__isnull=False).exists()
    members: dict[int, list[RequestLog]] = {}
    for log in errors:
        members.setdefault(log.error_group_id, []).append(log)
    groups = {group.id: group for group in ErrorGroup.objects.all()}
    assert groups.keys() == members.keys()
    for group_id, logs in members.items():
        group, newest = groups[group_id], logs[-1]
        assert (group.count, group.first_seen, group.last_seen) == (
            len(logs),
            logs[0].created_at,
            newest.created_at,
        )
        assert (group.last_message, group.last_status, group.state) == (
            newest.error_message,
            newest.status_code,
            "open",
        )
        for log in logs:
            model = log.model_requested or log.model_served
            fingerprint = ErrorGroup.make_fingerprint(
                log.category, log.kind, model, log.endpoint, log.upstream_key_id
            )
            assert fingerprint == group.fingerprint


# ---- the shape of traffic ------------------------------------------------------------------------------


def test_weekday_afternoons_are_busiest_and_nights_and_weekends_quieter() -> None:
    tuesday = datetime(2026, 3, 3, tzinfo=UTC)
    afternoon, night = minute_weight(tuesday.replace(hour=17)), minute_weight(tuesday.replace(hour=3))
    saturday = minute_weight(datetime(2026, 3, 7, 17, tzinfo=UTC))
    assert afternoon > 4 * night
    assert saturday < 0.5 * afternoon


def test_allot_splits_a_count_exactly_in_proportion() -> None:
    counts = allot(1001, [1.0, 3.0, 0.0, 6.0])
    assert sum(counts) == 1001 and counts[2] == 0
    assert counts == [100, 300, 0, 601]


@pytest.mark.django_db
def test_it_loads_exactly_count_logs_over_the_last_days_through_several_keys() -> None:
    generate(3000, days=2, keys=3)

    span = RequestLog.objects.order_by("created_at")
    assert RequestLog.objects.count() == 3000
    assert span.first().created_at >= NOW.replace(second=0) - timedelta(days=2)
    assert span.last().created_at < NOW.replace(second=0)
    assert list(TogetherKey.objects.values_list("name", flat=True)) == ["prod-batch", "prod-chat", "staging"]
    key_ids = set(TogetherKey.objects.values_list("id", flat=True))
    assert set(RequestLog.objects.values_list("upstream_key_id", flat=True)) == key_ids
    fingerprints = dict(TogetherKey.objects.values_list("id", "fingerprint"))
    assert all(log.key_fingerprint == fingerprints[log.upstream_key_id] for log in RequestLog.objects.all())


@pytest.mark.django_db
def test_successes_look_like_real_requests() -> None:
    generate(3000)

    ok = list(RequestLog.objects.filter(status_code=200))
    assert {log.model_requested for log in ok} <= {model.id for model in catalog.MODELS}
    chats = [log for log in ok if log.endpoint == "/v1/chat/completions"]
    assert chats and all(log.prompt_tokens and log.completion_tokens for log in chats)
    assert all(log.total_tokens == log.prompt_tokens + log.completion_tokens for log in chats)
    streams = [log for log in chats if log.stream]
    assert 0.4 < len(streams) / len(chats) < 0.7
    assert all(0 < log.ttft_ms < log.latency_ms for log in streams)
    assert all(log.ttft_ms is None for log in chats if not log.stream)
    assert all(log.ratelimit_limit and log.ratelimit_remaining is not None for log in chats)
    if EXPECTED_METHOD == "copy":  # record_entries() prices from the polled catalog, empty here
        assert all(log.cost_usd > 0 for log in chats)


@pytest.mark.django_db
def test_errors_span_the_taxonomy_in_realistic_proportions() -> None:
    generate(6000, days=1, keys=3)

    logs = RequestLog.objects.all()
    errors = [log for log in logs if log.category]
    assert 0.005 < len(errors) / len(logs) < 0.2
    assert {"rate_limit", "validation", "billing", "server"} <= {log.category for log in errors}
    assert {log.kind for log in errors} <= TAXONOMY.keys()
    assert all(log.cost_usd is None and log.prompt_tokens is None for log in errors)
    for log in errors:
        if log.kind == "token_limit_exceeded":
            assert "`inputs` tokens + `max_new_tokens` must be <=" in log.error_message
        if log.status_code == 429:
            assert 0 in (log.ratelimit_remaining, log.tokenlimit_remaining) and log.ratelimit_reset > 0
        if log.status_code == 402:
            assert log.error_message.startswith("Credit limit exceeded.")
        if log.kind == "model_not_found":
            assert log.model_requested in UNKNOWN_MODELS


# ---- rollups and error groups equal the logs ------------------------------------------------------------


@pytest.mark.django_db
@override_settings(ROLLUP_MINUTE_RETENTION_DAYS=1)
def test_rollups_equal_the_logs_aggregated_directly() -> None:
    generate(3000, days=2)

    assert_rollups_match(UsageDay, aggregate_logs("day"))
    assert UsageDay.objects.values("bucket").distinct().count() == 3  # two days back from 12:30
    assert_rollups_match(UsageHour, aggregate_logs("hour"))
    since = minute_rollups_since(NOW.replace(second=0, microsecond=0))
    assert_rollups_match(UsageMinute, aggregate_logs("minute", since))
    assert not UsageMinute.objects.filter(bucket__lt=since).exists()
    assert UsageMinute.objects.filter(bucket__lt=since + timedelta(hours=1)).exists()


@pytest.mark.django_db
def test_error_groups_equal_the_logs_grouped_directly() -> None:
    generate(4000, days=1)

    assert ErrorGroup.objects.count() > 5
    assert_groups_match_logs()


@pytest.mark.django_db
def test_a_second_run_adds_to_the_same_rollups_and_groups() -> None:
    generate(2000, days=1, seed=1)
    generate(2000, days=1, seed=2)

    assert RequestLog.objects.count() == 4000
    assert_rollups_match(UsageDay, aggregate_logs("day"))
    assert_rollups_match(UsageHour, aggregate_logs("hour"))
    assert_rollups_match(UsageMinute, aggregate_logs("minute"))
    assert_groups_match_logs()


@pytest.mark.django_db
def test_a_resolved_group_reopens_when_its_error_comes_back() -> None:
    resolved_at = NOW - timedelta(hours=12)
    generate(3000, days=1, seed=3, now=NOW - timedelta(days=1))
    ErrorGroup.objects.update(state="resolved", resolved_at=resolved_at)
    generate(3000, days=1, seed=3)

    old = ErrorGroup.objects.filter(first_seen__lt=NOW - timedelta(days=1))
    reopened, still_resolved = old.filter(state="open"), old.filter(state="resolved")
    assert reopened.exists() and all(
        group.last_seen > resolved_at and not group.resolved_at for group in reopened
    )
    assert still_resolved.exists() and all(group.last_seen <= resolved_at for group in still_resolved)


@pytest.mark.django_db
def test_truncate_starts_over() -> None:
    generate(1500, days=1, seed=1)
    generate(1000, days=1, seed=2, truncate=True)

    assert RequestLog.objects.count() == 1000
    assert sum(UsageHour.objects.values_list("requests", flat=True)) == 1000
    assert sum(UsageDay.objects.values_list("requests", flat=True)) == 1000
    assert (
        sum(ErrorGroup.objects.values_list("count", flat=True))
        == RequestLog.objects.exclude(category="").count()
    )


@pytest.mark.django_db
def test_the_command_reports_rows_per_second() -> None:
    out = StringIO()
    call_command("generate_request_logs", "--count", "500", "--days", "1", "--keys", "2", stdout=out)

    assert "Loaded 500 request logs over 1 days" in out.getvalue()
    assert "rows/s" in out.getvalue() and EXPECTED_METHOD in out.getvalue()
    assert sum(UsageHour.objects.values_list("requests", flat=True)) == 500
    assert Decimal(0) <= sum(UsageHour.objects.values_list("cost_usd", flat=True))
