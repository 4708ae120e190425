"""Every poller run: a heartbeat, a lease against overlapping runs, per-key failures that stop nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from together_dash.catalog.models import ModelInfo
from together_dash.catalog.polling import poll_models
from together_dash.keys.models import TogetherKey
from together_dash.pollers.models import RUN_LEASE, PollerHeartbeat, PollerKeyState
from together_dash.pollers.runs import PollReport, run_poller, stale_pollers
from together_dash.pollers.schedule import sync_periodic_tasks
from together_dash.pollers.testing import add_key, fault_for_key
from together_dash.simulator import catalog
from together_dash.simulator.testing import RunningSimulator

pytestmark = pytest.mark.django_db


def _heartbeat(name: str = "poll_models") -> PollerHeartbeat:
    return PollerHeartbeat.objects.get(name=name)


def test_a_run_records_its_heartbeat(together: RunningSimulator) -> None:
    add_key("main")
    poll_models()
    heartbeat = _heartbeat()
    assert heartbeat.last_started is not None and heartbeat.last_success is not None
    assert heartbeat.last_duration_ms is not None
    assert (heartbeat.last_error, heartbeat.run_count, heartbeat.status) == ("", 1, "ok")
    assert heartbeat.last_report["ok"] == 1
    assert heartbeat.running_since is None  # the lease is released


def test_a_poller_silent_for_twice_its_interval_is_stale(together: RunningSimulator) -> None:
    add_key("main")
    poll_models()
    heartbeat = _heartbeat()
    interval = timedelta(seconds=heartbeat.interval_seconds)
    assert not heartbeat.is_stale_at(heartbeat.last_success + 2 * interval - timedelta(seconds=1))
    assert heartbeat.is_stale_at(heartbeat.last_success + 2 * interval + timedelta(seconds=1))
    with time_machine.travel(timezone.now() + 3 * interval):
        assert heartbeat.status == "stale"


def test_stale_pollers_can_fire_an_alert_unless_ops_paused_them(db: None) -> None:
    sync_periodic_tasks()
    later = timezone.now() + timedelta(hours=1)
    assert {beat.name for beat in stale_pollers(later)} >= {"poll_rate_limits", "poll_fine_tunes"}
    PeriodicTask.objects.filter(name="poll_fine_tunes").update(enabled=False)
    assert "poll_fine_tunes" not in {beat.name for beat in stale_pollers(later)}
    assert stale_pollers() == []  # just scheduled: not silent for long yet


def test_a_run_that_raises_records_the_error_and_reraises(db: None) -> None:
    def broken(report: PollReport) -> None:
        raise RuntimeError("upstream said Bearer abc123secretvalue")

    with pytest.raises(RuntimeError):
        run_poller("poll_batches", broken)
    heartbeat = _heartbeat("poll_batches")
    assert heartbeat.is_failing and heartbeat.last_success is None
    assert heartbeat.last_error.startswith("RuntimeError")
    assert "abc123secretvalue" not in heartbeat.last_error
    assert heartbeat.running_since is None


def test_an_overlapping_run_is_skipped_but_a_redelivered_task_takes_its_lease_back(db: None) -> None:
    ran: list[str] = []
    assert PollerHeartbeat.claim("poll_models", "task-1", 300)

    report = run_poller("poll_models", lambda report: ran.append("other"), token="task-2")
    assert not report.claimed and ran == []
    # acks_late redelivers a task whose worker died with the same id, which holds the lease.
    run_poller("poll_models", lambda report: ran.append("redelivered"), token="task-1")
    assert ran == ["redelivered"]


def test_a_lease_left_by_a_dead_run_expires(db: None) -> None:
    ran: list[str] = []
    PollerHeartbeat.claim("poll_models", "dead", 300)
    with time_machine.travel(timezone.now() + RUN_LEASE + timedelta(seconds=1)):
        run_poller("poll_models", lambda report: ran.append("new"), token="fresh")
    assert ran == ["new"]


def test_a_429_backs_off_that_key_until_the_reset_while_the_others_carry_on(
    together: RunningSimulator, settings: object
) -> None:
    settings.POLLER_MAX_RETRY_WAIT = 0.1  # the simulated 429 asks for 1 s: longer than a poll may wait
    add_key("limited")
    add_key("fine")
    config = fault_for_key("limited", "429")
    report = poll_models(config=config)
    assert (report.ok, report.failed) == (1, 1)
    state = PollerKeyState.objects.get(key__name="limited", poller="poll_models")
    assert state.last_error_kind == "request_rate_limited"
    assert state.retry_after is not None and state.retry_after > timezone.now()

    report = poll_models(config=config)
    assert (report.ok, report.failed, report.skipped) == (1, 0, 1)

    with time_machine.travel(state.retry_after + timedelta(seconds=1), tick=True):
        report = poll_models()
    assert (report.ok, report.failed, report.skipped) == (2, 0, 0)
    assert ModelInfo.objects.count() == len(catalog.MODELS)


def test_a_key_whose_secret_cannot_be_decrypted_fails_alone(together: RunningSimulator) -> None:
    add_key("garbled")
    add_key("fine")
    TogetherKey.objects.filter(name="garbled").update(secret_encrypted="not-a-fernet-token")
    report = poll_models()
    assert (report.ok, report.failed) == (1, 1)
    assert ModelInfo.objects.count() == len(catalog.MODELS)
    state = PollerKeyState.objects.get(key__name="garbled")
    assert (state.last_error_kind, "decrypted" in state.last_error) == ("undecryptable_key", True)
