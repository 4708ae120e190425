"""The beat schedule lives in django-celery-beat's tables: created once, then owned by ops."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import ModelEntry

from together_dash.celery import app
from together_dash.pollers.models import PollerHeartbeat
from together_dash.pollers.schedule import PERIODIC_TASKS, interval_for, sync_periodic_tasks

pytestmark = pytest.mark.django_db


POLLERS = ("poll_models", "poll_rate_limits", "poll_fine_tunes", "poll_batches", "check_keys")


def _intervals() -> dict[str, int]:
    """The pollers' intervals (the registry also holds other apps' periodic tasks)."""
    tasks = PeriodicTask.objects.filter(name__in=POLLERS).select_related("interval")
    return {task.name: task.interval.every for task in tasks}


def test_it_creates_every_poller_with_its_default_interval() -> None:
    PeriodicTask.objects.all().delete()
    created = sync_periodic_tasks()
    assert created == [spec.name for spec in PERIODIC_TASKS]
    assert set(POLLERS) <= set(created)
    assert _intervals() == {
        "poll_models": 300,
        "poll_rate_limits": 60,
        "poll_fine_tunes": 30,
        "poll_batches": 60,
        "check_keys": 300,
    }
    app.loader.import_default_modules()  # what a worker does on start: autodiscovery of tasks.py
    assert {spec.task for spec in PERIODIC_TASKS} <= set(app.tasks)
    assert PollerHeartbeat.objects.filter(name__in=POLLERS).count() == len(POLLERS)


def test_demo_mode_polls_more_often() -> None:
    PeriodicTask.objects.all().delete()
    sync_periodic_tasks(demo=True)
    assert all(every <= 60 for every in _intervals().values())


def test_an_interval_ops_edited_is_never_put_back() -> None:
    sync_periodic_tasks()
    ten_minutes = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.filter(name="poll_models").update(interval=ten_minutes)
    assert sync_periodic_tasks() == []
    assert PeriodicTask.objects.get(name="poll_models").interval == ten_minutes
    # Heartbeats judge staleness by the interval beat really uses.
    assert interval_for("poll_models") == 600


def test_a_row_naming_a_task_that_moved_is_pointed_at_its_new_path() -> None:
    sync_periodic_tasks()
    ten_minutes = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.MINUTES)
    # Before the pollers lived with their data, every poll task was in together_dash.pollers.tasks.
    PeriodicTask.objects.filter(name="poll_models").update(
        task="together_dash.pollers.tasks.poll_models", interval=ten_minutes
    )
    assert sync_periodic_tasks() == []
    row = PeriodicTask.objects.get(name="poll_models")
    assert (row.task, row.interval) == ("together_dash.catalog.tasks.poll_models", ten_minutes)


def test_a_new_task_is_due_as_soon_as_beat_starts() -> None:
    sync_periodic_tasks()
    entry = ModelEntry(PeriodicTask.objects.get(name="poll_fine_tunes"), app=app)
    assert entry.is_due().is_due


@override_settings(DEMO_MODE=False, TOGETHER_API_KEY="")
def test_bootstrap_schedules_the_pollers_once() -> None:
    PeriodicTask.objects.all().delete()
    out = StringIO()
    call_command("bootstrap", stdout=out)
    assert "Scheduled pollers" in out.getvalue()
    again = StringIO()
    call_command("bootstrap", stdout=again)
    assert "Scheduled pollers" not in again.getvalue()
    assert PeriodicTask.objects.filter(name__in=POLLERS).count() == len(POLLERS)
