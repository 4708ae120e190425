"""Celery tasks of the keys app: key health, rate limits and grace windows; each has a command twin."""
from __future__ import annotations

from celery import Task, shared_task

from together_dash.keys.health import check_keys as check_keys_service
from together_dash.keys.lifecycle import expire_grace_windows
from together_dash.keys.rate_limits import poll_rate_limits as poll_rate_limits_service
from together_dash.pollers.runs import POLL_LIMITS, PollReport, run_poller

TASK_NAME = "expire_key_grace"


@shared_task(bind=True, soft_time_limit=300, time_limit=330)
def expire_key_grace(self: Task) -> None:
    """Destroy old secrets whose rotation grace window has ended (manage.py expire_key_grace runs the same).

    Under the periodic task's lease and heartbeat, so a grace window ends within one interval of its
    time even when nobody runs the command, and the overview shows it if this stops running.
    """

    def body(report: PollReport) -> None:
        report.count("old_secrets_destroyed", expire_grace_windows())

    run_poller(TASK_NAME, body, self.request.id)


@shared_task(bind=True, **POLL_LIMITS)
def check_keys(self: Task) -> None:
    check_keys_service(token=self.request.id)


@shared_task(bind=True, **POLL_LIMITS)
def poll_rate_limits(self: Task) -> None:
    poll_rate_limits_service(token=self.request.id)
