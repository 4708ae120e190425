"""The periodic tasks and their default intervals, synced into django-celery-beat's tables.

Beat reads its schedule from the database (CELERY_BEAT_SCHEDULER = DatabaseScheduler), so ops change
an interval in the admin (Periodic tasks) and beat picks it up without a deploy. sync_periodic_tasks()
only creates what is missing: an interval someone edited is never put back. The Celery task a row
names is ours, though: when a task moves to another module the row is pointed at its new path.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from together_dash.pollers.models import PollerHeartbeat


@dataclass(frozen=True, slots=True)
class PeriodicTaskSpec:
    """One periodic task: its name (also its heartbeat's), the Celery task, and default intervals."""

    name: str
    task: str
    every: int  # seconds
    demo_every: int  # seconds, in demo mode: a newcomer sees data move within a minute


PERIODIC_TASKS: tuple[PeriodicTaskSpec, ...] = (
    PeriodicTaskSpec("poll_models", "together_dash.catalog.tasks.poll_models", 300, 60),
    PeriodicTaskSpec("poll_rate_limits", "together_dash.keys.tasks.poll_rate_limits", 60, 20),
    PeriodicTaskSpec("poll_fine_tunes", "together_dash.jobs.tasks.poll_fine_tunes", 30, 10),
    PeriodicTaskSpec("poll_batches", "together_dash.jobs.tasks.poll_batches", 60, 15),
    PeriodicTaskSpec("check_keys", "together_dash.keys.tasks.check_keys", 300, 60),
    # Together reports billing usage in finished hourly windows: once an hour catches each one.
    PeriodicTaskSpec("poll_billing", "together_dash.billing.tasks.poll_billing", 3600, 300),
    # Endpoints bill by the minute: a state change is dated to within this interval.
    PeriodicTaskSpec("poll_endpoints", "together_dash.endpoints.tasks.poll_endpoints", 60, 15),
    PeriodicTaskSpec("prune_request_logs", "together_dash.traffic.tasks.prune_request_logs", 3600, 3600),
    # Also enqueued after every catalog change; the schedule is its backstop.
    PeriodicTaskSpec("backfill_costs", "together_dash.traffic.tasks.backfill_costs", 3600, 600),
    PeriodicTaskSpec("evaluate_alerts", "together_dash.alerts.tasks.evaluate_alerts", 30, 15),
    # Backstop for deliver_notification: sends what a lost task or an SMTP outage left pending.
    PeriodicTaskSpec("redeliver_alerts", "together_dash.alerts.tasks.redeliver_pending", 60, 30),
    # Ends rotation grace windows on time: the old secret of a rotated key stops working and is destroyed.
    PeriodicTaskSpec("expire_key_grace", "together_dash.keys.tasks.expire_key_grace", 60, 30),
)
BY_NAME: dict[str, PeriodicTaskSpec] = {spec.name: spec for spec in PERIODIC_TASKS}

_PERIOD_SECONDS = {
    IntervalSchedule.DAYS: 86400,
    IntervalSchedule.HOURS: 3600,
    IntervalSchedule.MINUTES: 60,
    IntervalSchedule.SECONDS: 1,
    IntervalSchedule.MICROSECONDS: 1e-6,
}


def sync_periodic_tasks(demo: bool = False) -> list[str]:
    """Create the periodic tasks that do not exist yet; return the names created."""
    created = []
    for spec in PERIODIC_TASKS:
        if _create_if_missing(spec, spec.demo_every if demo else spec.every):
            created.append(spec.name)
        # The heartbeat exists from now on, so a poller that never runs at all still turns stale.
        interval = {"interval_seconds": interval_for(spec.name)}
        PollerHeartbeat.objects.get_or_create(name=spec.name, defaults=interval)
    return created


@transaction.atomic
def _create_if_missing(spec: PeriodicTaskSpec, every: int) -> bool:
    if PeriodicTask.objects.filter(name=spec.name).exists():
        # An install from before a task moved names its old path, which no worker knows any more.
        PeriodicTask.objects.filter(name=spec.name).exclude(task=spec.task).update(task=spec.task)
        return False
    # A start_time makes beat treat the task as overdue (django-celery-beat backdates last_run_at),
    # so every poller runs as soon as beat starts instead of one interval later.
    _, created = PeriodicTask.objects.get_or_create(
        name=spec.name,
        defaults={"task": spec.task, "interval": _interval(every), "start_time": timezone.now()},
    )
    return created


def _interval(every: int) -> IntervalSchedule:
    existing = IntervalSchedule.objects.filter(every=every, period=IntervalSchedule.SECONDS).first()
    return existing or IntervalSchedule.objects.create(every=every, period=IntervalSchedule.SECONDS)


def interval_for(name: str) -> int:
    """The interval in seconds beat uses for a task now (as ops set it), else the default."""
    task = PeriodicTask.objects.filter(name=name).select_related("interval").first()
    if task is not None and task.interval is not None:
        return max(1, int(task.interval.every * _PERIOD_SECONDS.get(task.interval.period, 1)))
    spec = BY_NAME.get(name)
    return spec.every if spec else 60
