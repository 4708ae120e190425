"""The periodic tasks' twins: evaluate_alerts and deliver_alerts, with their heartbeats and leases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command

from tests.alerts.conftest import Inbox, SmtpServer
from together_dash.alerts.evaluation import fire_billing
from together_dash.alerts.models import Notification
from together_dash.keys.models import TogetherKey
from together_dash.pollers.models import PollerHeartbeat
from together_dash.pollers.schedule import BY_NAME

pytestmark = pytest.mark.django_db


def test_the_alert_tasks_are_scheduled() -> None:
    assert BY_NAME["evaluate_alerts"].task == "together_dash.alerts.tasks.evaluate_alerts"
    assert BY_NAME["redeliver_alerts"].task == "together_dash.alerts.tasks.redeliver_pending"


def test_evaluate_alerts_records_its_heartbeat(inbox: Inbox, rules: None) -> None:
    PollerHeartbeat.objects.create(
        name="poll_models", interval_seconds=60, created_at=datetime.now(UTC) - timedelta(minutes=5)
    )
    call_command("evaluate_alerts")

    beat = PollerHeartbeat.objects.get(name="evaluate_alerts")
    assert beat.last_success is not None
    assert beat.last_report["counts"]["notifications"] == 1


def test_an_evaluation_already_running_is_not_run_twice(rules: None) -> None:
    PollerHeartbeat.objects.create(name="evaluate_alerts", running_since=datetime.now(UTC), run_token="other")
    PollerHeartbeat.objects.create(
        name="poll_models", interval_seconds=60, created_at=datetime.now(UTC) - timedelta(minutes=5)
    )
    call_command("evaluate_alerts")

    assert not Notification.objects.exists()


def test_deliver_alerts_sends_what_is_pending(inbox: Inbox, key: TogetherKey) -> None:
    fire_billing(key.pk, datetime.now(UTC), "traffic")
    call_command("deliver_alerts")

    assert len(inbox.messages) == 1
    assert PollerHeartbeat.objects.get(name="redeliver_alerts").last_success is not None


def test_deliver_alerts_reports_smtp_down_on_its_heartbeat(smtp_down: SmtpServer, key: TogetherKey) -> None:
    fire_billing(key.pk, datetime.now(UTC), "traffic")
    with pytest.raises(CommandError, match="1 alert notification"):
        call_command("deliver_alerts")

    beat = PollerHeartbeat.objects.get(name="redeliver_alerts")
    assert beat.is_failing
    assert "still pending" in beat.last_error
