"""check_keys: 200 healthy with organization and project, 401 invalid, network errors unknown; unbilled."""

from __future__ import annotations

import logging

import pytest

from together_dash.catalog.polling import poll_models
from together_dash.keys.health import check_keys
from together_dash.keys.models import TogetherKey
from together_dash.pollers.models import PollerHeartbeat, PollerKeyState
from together_dash.pollers.testing import add_key, fault_for_key
from together_dash.simulator.testing import RunningSimulator


@pytest.fixture
def together(polled_simulator: RunningSimulator) -> RunningSimulator:
    """The poller tests' simulator (the keys app's own `together` accepts only listed secrets)."""
    return polled_simulator


pytestmark = pytest.mark.django_db


def test_a_key_together_accepts_is_healthy_with_its_organization(together: RunningSimulator) -> None:
    key, _ = add_key("main")
    report = check_keys()
    key.refresh_from_db()
    assert key.health == TogetherKey.Health.HEALTHY
    assert (key.organization_name, key.project_name) == ("Simulated Org", "Default Project")
    assert key.health_checked_at is not None
    assert "models visible" in key.health_detail
    assert report.counts == {"healthy": 1}


def test_checking_keys_is_never_a_billed_call(together: RunningSimulator) -> None:
    add_key("main")
    together.set_credits(0)  # any billed call would now fail with 402
    check_keys()
    assert TogetherKey.objects.get().health == TogetherKey.Health.HEALTHY
    assert together.summary()["billed_calls"] == 0


def test_a_key_revoked_mid_run_turns_invalid_and_the_others_stay_healthy(
    together: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    revoked, secret = add_key("revoked")
    kept, _ = add_key("kept")
    together.freeze_clock()
    together.set_scenario(revoke_keys={secret: 30})
    check_keys()
    assert TogetherKey.objects.get(pk=revoked.pk).health == TogetherKey.Health.HEALTHY

    together.advance(31)
    check_keys()
    poll_models()
    revoked.refresh_from_db()
    kept.refresh_from_db()
    assert revoked.health == TogetherKey.Health.INVALID
    assert "Invalid API key" in revoked.health_detail
    assert revoked.organization_name == "Simulated Org"  # kept from the last good answer
    assert kept.health == TogetherKey.Health.HEALTHY
    state = PollerKeyState.objects.get(poller="poll_models", key=revoked)
    assert state.last_error_kind == "invalid_api_key"
    assert PollerKeyState.objects.get(poller="poll_models", key=kept).last_success is not None
    # The secret is nowhere: not in the health detail, the heartbeat, nor any log line.
    assert secret not in revoked.health_detail
    assert secret not in str(PollerHeartbeat.objects.get(name="poll_models").last_report)
    assert secret not in caplog.text


def test_a_network_error_makes_the_health_unknown(together: RunningSimulator) -> None:
    add_key("flaky")
    add_key("fine")
    report = check_keys(config=fault_for_key("flaky", "reset"))
    flaky = TogetherKey.objects.get(name="flaky")
    assert flaky.health == TogetherKey.Health.UNKNOWN
    assert flaky.health_detail.startswith("connection_error")
    assert TogetherKey.objects.get(name="fine").health == TogetherKey.Health.HEALTHY
    assert report.counts == {"healthy": 1, "unknown": 1}


def test_revoked_keys_in_the_dashboard_are_not_checked(together: RunningSimulator) -> None:
    key, _ = add_key("old")
    TogetherKey.objects.filter(pk=key.pk).update(status=TogetherKey.Status.REVOKED)
    report = check_keys()
    assert report.keys == 0
    assert TogetherKey.objects.get().health_checked_at is None
