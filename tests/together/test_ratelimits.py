"""Rate-limit header parsing: every header optional, case-insensitive, garbage-tolerant."""
from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from together_dash.together.ratelimits import RateLimitInfo, parse_ratelimit_headers

FULL = {
    "X-RateLimit-Limit": "600",
    "X-RateLimit-Remaining": "450",
    "X-RateLimit-Reset": "12",
    "X-TokenLimit-Limit": "180000",
    "X-TokenLimit-Remaining": "9000",
    "x-ratelimit-limit-dynamic": "300",
    "x-ratelimit-remaining-dynamic": "30",
    "x-tokenlimit-limit-dynamic": "90000",
    "x-tokenlimit-remaining-dynamic": "0",
    "Retry-After": "7",
    "Retry-After-Ms": "6500",
}


def test_it_reads_the_full_set_of_headers():
    info = parse_ratelimit_headers(FULL)
    assert info == RateLimitInfo(
        request_limit=600, request_remaining=450, reset_seconds=12,
        token_limit=180000, token_remaining=9000,
        request_limit_dynamic=300, request_remaining_dynamic=30,
        token_limit_dynamic=90000, token_remaining_dynamic=0,
        retry_after=7, retry_after_ms=6500,
    )
    assert not info.is_empty
    assert isinstance(info.request_limit, int)


def test_it_reads_an_httpx_headers_object():
    info = parse_ratelimit_headers(httpx.Headers({"x-ratelimit-remaining": "3", "x-ratelimit-limit": "4"}))
    assert info.request_headroom_percent == 75.0


def test_it_leaves_absent_headers_as_none():
    info = parse_ratelimit_headers({"x-ratelimit-remaining": "59", "content-type": "application/json"})
    assert info.request_remaining == 59
    assert info.request_limit is None and info.token_limit is None and info.reset_seconds is None
    assert info.request_headroom_percent is None
    assert not info.is_empty


def test_it_reports_empty_when_no_rate_limit_header_came_back():
    assert parse_ratelimit_headers({"content-type": "application/json"}).is_empty
    assert parse_ratelimit_headers({}).is_empty
    assert parse_ratelimit_headers(None).is_empty


def test_it_keeps_a_fractional_reset():
    info = parse_ratelimit_headers({"x-ratelimit-reset": "0.075"})
    assert info.reset_seconds == pytest.approx(0.075)
    assert info.retry_after_seconds() == pytest.approx(0.075)


@pytest.mark.parametrize("value", ["", "soon", "nan", "inf", "-5", "1,000", "0x10", "  "])
def test_it_turns_garbage_into_none(value):
    headers = {name: value for name in FULL}
    info = parse_ratelimit_headers(headers)
    assert info.is_empty
    assert info.retry_after_seconds() is None


def test_it_survives_a_mapping_that_raises():
    class Exploding(dict):
        def items(self):
            raise RuntimeError("boom")

    assert parse_ratelimit_headers(Exploding(a="1")).is_empty


def test_it_reads_retry_after_as_an_http_date():
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    info = parse_ratelimit_headers({"Retry-After": "Sun, 01 Mar 2026 12:00:30 GMT"}, now=now)
    assert info.retry_after == pytest.approx(30.0)


def test_it_clamps_a_past_http_date_to_zero():
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    info = parse_ratelimit_headers({"Retry-After": "Sun, 01 Mar 2026 11:00:00 GMT"}, now=now)
    assert info.retry_after == 0.0


def test_it_prefers_retry_after_ms_then_retry_after_then_reset():
    assert parse_ratelimit_headers(FULL).retry_after_seconds() == pytest.approx(6.5)
    assert parse_ratelimit_headers({"retry-after": "7", "x-ratelimit-reset": "12"}).retry_after_seconds() == 7
    assert parse_ratelimit_headers({"x-ratelimit-reset": "12"}).retry_after_seconds() == 12


def test_it_computes_headroom_from_static_headers_first():
    info = parse_ratelimit_headers(FULL)
    assert info.request_headroom_percent == pytest.approx(75.0)
    assert info.token_headroom_percent == pytest.approx(5.0)


def test_it_falls_back_to_dynamic_headers_for_headroom():
    headers = {"x-tokenlimit-limit-dynamic": "1000", "x-tokenlimit-remaining-dynamic": "0"}
    info = parse_ratelimit_headers(headers)
    assert info.token_headroom_percent == 0.0
    assert info.request_headroom_percent is None


def test_it_reports_zero_static_headroom_even_when_dynamic_has_room():
    headers = {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "0",
               "x-ratelimit-limit-dynamic": "10", "x-ratelimit-remaining-dynamic": "10"}
    assert parse_ratelimit_headers(headers).request_headroom_percent == 0.0


def test_it_has_no_headroom_for_a_zero_limit():
    info = parse_ratelimit_headers({"x-ratelimit-limit": "0", "x-ratelimit-remaining": "0"})
    assert info.request_headroom_percent is None


def test_it_exports_a_plain_dict_for_snapshots():
    assert parse_ratelimit_headers({"x-ratelimit-remaining": "5"}).to_dict()["request_remaining"] == 5
