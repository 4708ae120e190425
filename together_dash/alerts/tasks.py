"""Celery tasks: thin shells over evaluation.py and delivery.py; each has a management command twin."""

from __future__ import annotations

from celery import Task, shared_task

from together_dash.alerts.delivery import DeliveryError, deliver, scheduled_redelivery
from together_dash.alerts.evaluation import scheduled_evaluation


# SMTP down: retried with exponential backoff capped at 5 minutes, for days (acks_late in settings);
# the redeliver_pending sweep backs this up in case the broker loses the task.
@shared_task(
    autoretry_for=(DeliveryError,),
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=2000,
    soft_time_limit=120,
    time_limit=180,
    bind=True,
)
def deliver_notification(self: Task, notification_id: int) -> None:
    # A task id is a uuid; without its dashes it fits Notification.claim_token (32 characters).
    deliver(notification_id, token=(self.request.id or "").replace("-", "")[:32])


@shared_task(bind=True, soft_time_limit=240, time_limit=300)
def evaluate_alerts(self: Task) -> None:
    scheduled_evaluation(token=self.request.id)


@shared_task(bind=True, soft_time_limit=240, time_limit=300)
def redeliver_pending(self: Task) -> None:
    try:
        scheduled_redelivery(token=self.request.id)
    except DeliveryError:
        pass  # recorded on the heartbeat; the next sweep tries again
