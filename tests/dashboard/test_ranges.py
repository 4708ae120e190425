from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.http import QueryDict
from django.test import override_settings

from together_dash.dashboard.ranges import Range, parse_range

NOW = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def parsed(query: str) -> Range:
    return parse_range(QueryDict(query), now=NOW)


@pytest.mark.parametrize(
    ("name", "span"),
    [
        ("1h", timedelta(hours=1)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("30d", timedelta(days=30)),
    ],
)
def test_a_preset_ends_now_and_spans_its_length(name: str, span: timedelta) -> None:
    rng = parsed(f"range={name}")
    assert (rng.name, rng.start, rng.end, rng.problem) == (name, NOW - span, NOW, "")


def test_without_parameters_it_shows_the_last_24_hours() -> None:
    rng = parsed("")
    assert (rng.name, rng.span, rng.key_id, rng.model) == ("24h", timedelta(hours=24), None, None)


@override_settings(TIME_ZONE="UTC")
def test_a_custom_range_reads_datetime_local_values() -> None:
    rng = parsed("range=custom&start=2026-02-20T08:00&end=2026-02-21T09:30")
    assert (rng.start, rng.end) == (
        datetime(2026, 2, 20, 8, 0, tzinfo=UTC),
        datetime(2026, 2, 21, 9, 30, tzinfo=UTC),
    )
    assert rng.is_custom and rng.problem == ""


def test_a_custom_range_without_an_end_ends_now() -> None:
    assert parsed("range=custom&start=2026-03-01T10:00").end == NOW


@pytest.mark.parametrize(
    "query",
    [
        "range=custom",
        "range=custom&start=yesterday",
        "range=custom&start=2026-03-01T12:00&end=2026-03-01T11:00",
        "range=custom&start=2026-01-01T00:00&end=2026-03-01T00:00",
        "range=90d",
    ],
)
def test_an_unusable_range_falls_back_to_24_hours_and_says_why(query: str) -> None:
    rng = parsed(query)
    assert (rng.name, rng.end - rng.start) == ("24h", timedelta(hours=24))
    assert rng.problem


def test_key_and_model_filters_are_read_and_junk_keys_ignored() -> None:
    assert (parsed("key=7&model=%20Qwen/Qwen2.5-7B%20").key_id, parsed("model=Qwen/Qwen2.5-7B").model) == (
        7,
        "Qwen/Qwen2.5-7B",
    )
    assert parsed("key=seven").key_id is None
    assert parsed("key=-1").key_id is None
    assert parsed("model=").model is None


def test_its_params_reproduce_the_same_range() -> None:
    original = parsed("range=custom&start=2026-02-20T08:00&end=2026-02-21T09:30&key=3&model=m")
    assert parse_range(QueryDict(original.query), now=NOW) == original
    assert parsed("range=7d&key=3").params() == {"range": "7d", "key": "3"}


def test_the_previous_period_has_the_same_length_and_ends_where_this_one_starts() -> None:
    rng = parsed("range=24h&key=2")
    previous = rng.previous()
    assert (previous.start, previous.end, previous.key_id) == (NOW - timedelta(hours=48), rng.start, 2)
