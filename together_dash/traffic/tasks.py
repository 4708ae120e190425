"""Celery tasks of the traffic app: thin shells over services, each with a management command twin."""
from __future__ import annotations

from celery import Task, shared_task

from together_dash.traffic import backfill, retention


@shared_task(bind=True, soft_time_limit=1800, time_limit=1900)
def prune_request_logs(self: Task) -> None:
    """Delete request logs and minute rollups past retention (manage.py prune_request_logs runs the same)."""
    retention.scheduled_prune(token=self.request.id)


@shared_task(bind=True, soft_time_limit=1800, time_limit=1900)
def backfill_costs(self: Task) -> None:
    """Cost the requests logged before their model had a price (manage.py backfill_costs runs the same)."""
    backfill.scheduled_backfill(token=self.request.id)
