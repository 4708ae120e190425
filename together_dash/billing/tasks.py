"""Celery tasks of the billing app: thin shells over polling.py; `manage.py poll_billing` is the twin."""
from __future__ import annotations

from celery import Task, shared_task

from together_dash.billing.polling import poll_billing as poll_billing_service
from together_dash.pollers.runs import POLL_LIMITS


@shared_task(bind=True, **POLL_LIMITS)
def poll_billing(self: Task) -> None:
    poll_billing_service(token=self.request.id)
