from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.test import override_settings

from together_dash.pollers import schedule
from together_dash.pollers.models import PollerHeartbeat
from together_dash.traffic import retention, tasks
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.models import ErrorGroup, RequestBodySample, RequestLog, UsageHour, UsageMinute
from together_dash.traffic.recording import record_entries

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen_time() -> None:
    with time_machine.travel(NOW, tick=False):
        yield


def logs_days_ago(*days: float, errors: bool = False) -> None:
    record_entries([
        LogEntry(created_at=NOW - timedelta(days=age), endpoint="/v1/chat/completions", model_requested="m",
                 status_code=500 if errors else 200, category="server" if errors else "",
                 kind="model_overloaded" if errors else "")
        for age in days
    ])


def test_logs_past_retention_are_deleted_and_recent_ones_kept() -> None:
    logs_days_ago(40, 31, 30.01, 29.9, 1, 0.1)

    result = retention.prune()

    assert result.request_logs == 3
    assert result.logs_before == NOW - timedelta(days=30)
    ages = sorted((NOW - created).days for created in RequestLog.objects.values_list("created_at", flat=True))
    assert ages == [0, 1, 29]


def test_deletion_goes_in_batches_until_nothing_old_is_left() -> None:
    logs_days_ago(*[45 + n / 100 for n in range(23)], 2)

    assert retention.prune(batch_size=5).request_logs == 23
    assert RequestLog.objects.count() == 1


def test_minute_rollups_go_after_three_days_hour_rollups_and_groups_stay() -> None:
    logs_days_ago(4, 2, errors=True)

    result = retention.prune()

    assert (result.request_logs, result.minute_rollups) == (0, 1)
    assert UsageMinute.objects.count() == 1
    assert UsageHour.objects.count() == 2
    assert ErrorGroup.objects.get().count == 2


@override_settings(REQUEST_LOG_RETENTION_DAYS=7, ROLLUP_MINUTE_RETENTION_DAYS=1)
def test_retention_follows_the_settings() -> None:
    logs_days_ago(8, 6, 0.5)

    result = retention.prune()

    assert (result.request_logs, result.minute_rollups) == (1, 2)


def test_error_logs_can_be_pruned_while_their_group_stays() -> None:
    logs_days_ago(40, errors=True)

    retention.prune()

    assert not RequestLog.objects.exists()
    assert ErrorGroup.objects.get().count == 1


def test_the_command_runs_the_same_pruning_and_says_what_it_did() -> None:
    logs_days_ago(40, 41, 1)
    out = io.StringIO()

    call_command("prune_request_logs", "--batch-size", "1", stdout=out)

    assert "Deleted 2 request logs" in out.getvalue()
    assert RequestLog.objects.count() == 1


def test_the_periodic_task_runs_the_same_pruning_and_reports_its_heartbeat() -> None:
    logs_days_ago(40, 1)

    tasks.prune_request_logs.apply()

    assert RequestLog.objects.count() == 1
    heartbeat = PollerHeartbeat.objects.get(name=retention.TASK_NAME)
    assert heartbeat.last_success == NOW
    assert heartbeat.last_report["counts"] == {"request_logs": 1, "minute_rollups": 1, "body_samples": 0}


def test_a_second_run_while_one_holds_the_lease_is_skipped() -> None:
    logs_days_ago(40)
    PollerHeartbeat.claim(retention.TASK_NAME, "other-run", 3600)

    assert retention.scheduled_prune() is None
    assert RequestLog.objects.count() == 1


def test_the_schedule_runs_pruning_periodically() -> None:
    spec = schedule.BY_NAME[retention.TASK_NAME]
    assert spec.task == "together_dash.traffic.tasks.prune_request_logs"
    assert tasks.prune_request_logs.name == spec.task


def test_body_samples_go_with_their_logs() -> None:
    record_entries([
        LogEntry(created_at=NOW - timedelta(days=age), endpoint="/v1/chat/completions",
                 extra={"body_sample": {"request": f"asked {age} days ago", "response": "{}"}})
        for age in (40, 31, 2)
    ])

    result = retention.prune()

    assert result.body_samples == 2 and result.request_logs == 2
    kept = RequestBodySample.objects.get()
    assert kept.request_body == "asked 2 days ago" and kept.request_log_id == RequestLog.objects.get().id
