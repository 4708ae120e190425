"""Celery tasks of the catalog: thin shells over polling.py; `manage.py poll_models` runs the same code."""
from __future__ import annotations

from celery import Task, shared_task

from together_dash.catalog.polling import poll_models as poll_models_service
from together_dash.pollers.runs import POLL_LIMITS


@shared_task(bind=True, **POLL_LIMITS)
def poll_models(self: Task) -> None:
    poll_models_service(token=self.request.id)
