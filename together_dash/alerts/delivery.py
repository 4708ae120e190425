"""The outbox: send pending notifications, one claim at a time, and never forget one.

A row is claimed pending -> sending with a conditional UPDATE before the SMTP call, so two workers (a
retried task and the sweep, or a redelivered task) never both send it. It is marked sent only after the
SMTP server accepted the message; on any error it goes back to pending with the error kept for ops.

A worker that dies mid-send (SIGKILL, lost machine) leaves its row in "sending". The task is handed out
again (acks_late) under the same id, which is the claim token, so the redelivered task takes its own claim
back at once; otherwise the sweep takes the row once its lease runs out.

At-least-once edge, on purpose: if the worker died after the server accepted the message but before the
row was marked sent, that second attempt sends it again. A duplicate email in that narrow window is
better than a lost billing alert.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db.models import F, Q
from django.utils import timezone

from together_dash.alerts.emails import render_digest
from together_dash.alerts.models import Notification, pending_sweep_filter
from together_dash.pollers.runs import PollReport, run_poller
from together_dash.together.redact import redact

logger = logging.getLogger(__name__)

# Longer than any SMTP conversation can take (EMAIL_TIMEOUT per socket operation).
SENDING_LEASE = timedelta(minutes=5)


class DeliveryError(Exception):
    """SMTP did not take the message; the notification is pending again and will be retried."""


def deliver(notification_id: int, token: str | None = None) -> bool:
    """Send one notification (inside a digest when many wait for the same people); True if sent now.

    token: the caller's own id (a Celery task id), so a redelivered task can reclaim what it left in sending.
    """
    now = timezone.now()
    ours = Q(status=Notification.Status.SENDING, claim_token=token) if token else Q(pk__in=[])
    token = token or uuid.uuid4().hex
    claimed = Notification.objects.filter(
        pending_sweep_filter(now, SENDING_LEASE) | ours, pk=notification_id
    ).update(
        status=Notification.Status.SENDING, claimed_at=now, claim_token=token, attempts=F("attempts") + 1
    )
    if not claimed:
        return False  # sent already, skipped, or another worker is sending it right now
    notification = Notification.objects.get(pk=notification_id)
    batch = [notification, *_claim_digest_peers(notification, token)]
    try:
        _send(batch)
    except Exception as exc:
        _release(token, exc)
        raise DeliveryError(_error_text(exc)) from exc
    Notification.objects.filter(claim_token=token, status=Notification.Status.SENDING).update(
        status=Notification.Status.SENT,
        sent_at=timezone.now(),
        last_error="",
        digest_size=len(batch) if len(batch) > 1 else 0,
    )
    return True


def _claim_digest_peers(notification: Notification, token: str) -> list[Notification]:
    """Other pending notifications for the same people, from the last few seconds, when there are many."""
    since = timezone.now() - timedelta(seconds=settings.ALERT_DIGEST_WINDOW_SECONDS)
    peers = Notification.objects.filter(
        status=Notification.Status.PENDING, recipients=notification.recipients, created_at__gte=since
    ).exclude(pk=notification.pk)
    if peers.count() + 1 < settings.ALERT_DIGEST_MIN:
        return []
    now = timezone.now()
    peers.update(
        status=Notification.Status.SENDING, claimed_at=now, claim_token=token, attempts=F("attempts") + 1
    )
    claimed = Notification.objects.filter(claim_token=token, status=Notification.Status.SENDING)
    claimed = claimed.exclude(pk=notification.pk)
    return list(claimed.order_by("created_at", "id"))


def _send(batch: list[Notification]) -> None:
    if len(batch) == 1:
        subject, text, html = batch[0].subject, batch[0].body_text, batch[0].body_html
    else:
        subject, text, html = render_digest(batch)
    message = EmailMultiAlternatives(
        subject, text, settings.DEFAULT_FROM_EMAIL, batch[0].recipient_list, connection=get_connection()
    )
    if html:
        message.attach_alternative(html, "text/html")
    message.send(fail_silently=False)


def _release(token: str, exc: Exception) -> None:
    """Back to pending with the reason, so the next attempt (retry or sweep) can claim it."""
    error = _error_text(exc)
    logger.warning("alert email not sent, will retry: %s", error)
    Notification.objects.filter(claim_token=token, status=Notification.Status.SENDING).update(
        status=Notification.Status.PENDING, claim_token="", last_error=error
    )


def _error_text(exc: Exception) -> str:
    secrets = tuple(s for s in (getattr(settings, "EMAIL_HOST_PASSWORD", ""),) if s)
    return redact(f"{type(exc).__name__}: {exc}", secrets)[:500]


def pending_ids(limit: int = 200) -> list[int]:
    """Notifications waiting to go out (and any a dead worker left in sending), oldest first."""
    query = Notification.objects.filter(pending_sweep_filter(timezone.now(), SENDING_LEASE))
    return list(query.order_by("created_at", "id").values_list("id", flat=True)[:limit])


def deliver_pending(limit: int = 200) -> int:
    """The sweep: send what is waiting; stop at the first SMTP failure (the rest would fail too)."""
    sent = 0
    for notification_id in pending_ids(limit):
        try:
            sent += deliver(notification_id)
        except DeliveryError:
            break
    return sent


REDELIVERY_TASK = "redeliver_alerts"  # its name in pollers/schedule.py, also its heartbeat's


def scheduled_redelivery(token: str | None = None) -> int:
    """deliver_pending() under its periodic task's lease; a run that left mail pending records an error."""

    def body(report: PollReport) -> None:
        report.count("sent", deliver_pending())
        waiting = len(pending_ids())
        report.count("pending", waiting)
        if waiting:
            last = Notification.objects.filter(status=Notification.Status.PENDING).exclude(last_error="")
            error = last.order_by("-id").values_list("last_error", flat=True).first()
            if error:
                raise DeliveryError(f"{waiting} alert email(s) still pending: {error}")

    report = run_poller(REDELIVERY_TASK, body, token)
    return report.counts.get("sent", 0) if report.claimed else 0
