"""Celery tasks and the hand-off to workers: thin shells over evaluation.py and delivery.py.

Each periodic task has a management command twin. enqueue() is the one place a notification is handed
to a worker, after its row is committed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from celery import Task, shared_task

from together_dash.alerts.delivery import DeliveryError, deliver, scheduled_redelivery
from together_dash.alerts.evaluation import billing_transitions, evaluate_rules
from together_dash.alerts.models import Notification
from together_dash.pollers.runs import PollReport, run_poller
from together_dash.traffic.recording import RecordResult

logger = logging.getLogger(__name__)
EVALUATION_TASK = "evaluate_alerts"  # its name in pollers/schedule.py, also its heartbeat's


def enqueue(notifications: Iterable[Notification | None]) -> None:
    """Hand new notifications, and those of the same transition (one per channel), to workers after commit."""
    ids: dict[int, None] = {}
    for notification in notifications:
        if notification is None:
            continue
        if notification.status == Notification.Status.PENDING:
            ids[notification.pk] = None
        if notification.event_id is not None:
            siblings = Notification.objects.filter(
                event_id=notification.event_id, status=Notification.Status.PENDING
            )
            ids.update(dict.fromkeys(siblings.values_list("pk", flat=True)))
    for notification_id in ids:
        deliver_notification.delay_on_commit(notification_id)


def on_recorded(result: RecordResult) -> None:
    """After a batch of request logs is committed: fire on new 402s, resolve on successes. Never raises."""
    try:
        enqueue(billing_transitions(result.keys))
    except Exception:
        logger.exception("billing alert evaluation failed; recording is unaffected")


def on_batch_recorded(sender: Any, result: RecordResult, **kwargs: Any) -> None:
    """The receiver of traffic's batch_recorded signal (connected in AlertsConfig.ready)."""
    on_recorded(result)


def evaluate_alerts_now() -> int:
    """Evaluate every rule and the reminders, hand the notifications over; returns how many were written."""
    notifications = evaluate_rules()
    enqueue(notifications)
    return sum(1 for notification in notifications if notification is not None)


def scheduled_evaluation(token: str | None = None) -> int:
    """evaluate_alerts_now() under its periodic task's lease and heartbeat; an overlapping beat is skipped."""

    def body(report: PollReport) -> None:
        report.count("notifications", evaluate_alerts_now())

    report = run_poller(EVALUATION_TASK, body, token)
    return report.counts.get("notifications", 0) if report.claimed else 0


# SMTP or a channel down: retried with exponential backoff capped at 5 minutes, for days (acks_late in
# settings), or after the receiver's Retry-After; the redeliver_pending sweep backs this up in case the
# broker loses the task.
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
    try:
        deliver(notification_id, token=(self.request.id or "").replace("-", "")[:32])
    except DeliveryError as exc:
        if exc.retry_after is None:
            raise  # autoretry_for: the exponential backoff
        raise self.retry(exc=exc, countdown=exc.retry_after) from None


@shared_task(bind=True, soft_time_limit=240, time_limit=300)
def evaluate_alerts(self: Task) -> None:
    scheduled_evaluation(token=self.request.id)


@shared_task(bind=True, soft_time_limit=240, time_limit=300)
def redeliver_pending(self: Task) -> None:
    try:
        scheduled_redelivery(token=self.request.id)
    except DeliveryError:
        pass  # recorded on the heartbeat; the next sweep tries again
