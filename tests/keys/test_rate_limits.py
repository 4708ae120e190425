"""poll_rate_limits: key-level snapshots from a free probe, per-model ones from proxied responses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from together_dash.keys.models import RateLimitSnapshot, TogetherKey
from together_dash.keys.rate_limits import poll_rate_limits
from together_dash.pollers.models import PollerKeyState
from together_dash.pollers.testing import add_key, fault_for_key
from together_dash.simulator.testing import RunningSimulator
from together_dash.traffic.models import RequestLog


@pytest.fixture
def together(polled_simulator: RunningSimulator) -> RunningSimulator:
    """The poller tests' simulator (the keys app's own `together` accepts only listed secrets)."""
    return polled_simulator


pytestmark = pytest.mark.django_db

LLAMA = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
SMALL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"


def _proxied(
    key: TogetherKey, model: str, minutes_ago: float, remaining: int, limit: int = 600
) -> RequestLog:
    return RequestLog.objects.create(
        created_at=timezone.now() - timedelta(minutes=minutes_ago),
        upstream_key=key,
        endpoint="/v1/chat/completions",
        model_requested=model,
        status_code=200,
        ratelimit_limit=limit,
        ratelimit_remaining=remaining,
        ratelimit_reset=12.5,
        tokenlimit_limit=100_000,
        tokenlimit_remaining=90_000,
    )


def test_the_probe_records_a_key_level_snapshot(together: RunningSimulator) -> None:
    key, secret = add_key("main")
    together.set_scenario(key_rate_limits={secret: {"requests": 600, "tokens": 1_000_000, "window_s": 60}})
    poll_rate_limits()
    snapshot = RateLimitSnapshot.objects.get(key=key, source="probe")
    assert snapshot.model == ""
    assert snapshot.request_limit == 600
    assert snapshot.token_limit == 1_000_000
    assert snapshot.headroom_pct is not None and 0 <= snapshot.headroom_pct <= 100


def test_the_latest_proxied_headers_are_recorded_per_key_and_model(together: RunningSimulator) -> None:
    key, _ = add_key("main")
    _proxied(key, LLAMA, minutes_ago=3, remaining=500)
    latest = _proxied(key, LLAMA, minutes_ago=1, remaining=150)
    _proxied(key, SMALL, minutes_ago=2, remaining=599)
    poll_rate_limits()
    proxied = RateLimitSnapshot.objects.filter(source="proxy")
    assert sorted(proxied.values_list("model", "request_remaining")) == [(LLAMA, 150), (SMALL, 599)]
    llama = proxied.get(model=LLAMA)
    assert llama.taken_at == latest.created_at
    assert llama.headroom_pct == 25.0  # requests 150/600 are tighter than tokens 90%
    assert llama.reset_seconds == 12.5


def test_rereading_the_same_proxied_rows_adds_nothing(together: RunningSimulator) -> None:
    key, _ = add_key("main")
    _proxied(key, LLAMA, minutes_ago=1, remaining=150)
    poll_rate_limits()
    poll_rate_limits()
    assert RateLimitSnapshot.objects.filter(source="proxy").count() == 1


def test_old_or_header_less_proxied_rows_are_not_snapshots(together: RunningSimulator) -> None:
    key, _ = add_key("main")
    _proxied(key, LLAMA, minutes_ago=60, remaining=10)
    RequestLog.objects.create(upstream_key=key, endpoint="/v1/chat/completions", model_requested=SMALL)
    poll_rate_limits()
    assert not RateLimitSnapshot.objects.filter(source="proxy").exists()


def test_a_429_on_the_probe_is_a_snapshot_with_no_headroom_and_the_key_waits(
    together: RunningSimulator, settings: object
) -> None:
    settings.POLLER_MAX_RETRY_WAIT = 0.1
    key, _ = add_key("limited")
    report = poll_rate_limits(config=fault_for_key("limited", "429"))
    assert report.failed == 1
    snapshot = RateLimitSnapshot.objects.get(key=key, source="probe")
    assert (snapshot.request_remaining, snapshot.request_limit, snapshot.headroom_pct) == (0, 60, 0.0)
    assert PollerKeyState.objects.get(key=key).retry_after > timezone.now()
    assert poll_rate_limits().skipped == 1


def test_snapshots_past_the_retention_are_pruned(together: RunningSimulator, settings: object) -> None:
    settings.RATE_LIMIT_SNAPSHOT_RETENTION_DAYS = 14
    key, _ = add_key("main")
    old = timezone.now() - timedelta(days=15)
    RateLimitSnapshot.objects.create(key=key, taken_at=old, source="probe", request_remaining=1)
    report = poll_rate_limits()
    assert report.counts["pruned"] == 1
    assert not RateLimitSnapshot.objects.filter(taken_at=old).exists()
