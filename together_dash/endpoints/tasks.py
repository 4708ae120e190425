"""Celery task of the endpoints app: a thin shell over polling.py; `manage.py poll_endpoints` is the twin."""
from __future__ import annotations

from celery import Task, shared_task

from together_dash.endpoints.polling import poll_endpoints as poll_endpoints_service
from together_dash.pollers.runs import POLL_LIMITS


@shared_task(bind=True, **POLL_LIMITS)
def poll_endpoints(self: Task) -> None:
    poll_endpoints_service(token=self.request.id)
