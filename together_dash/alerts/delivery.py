"""The outbox: send pending emails and channel messages, one claim at a time, and never forget one.

A row is claimed pending -> sending with a conditional UPDATE before the SMTP or HTTP call, so two workers
(a retried task and the sweep, or a redelivered task) never both send it. It is marked sent only after the
SMTP server accepted the message or the channel's receiver answered 2xx; on any error (a refusal, non-2xx,
a timeout, a connection error) it goes back to pending with the error kept for ops, redacted: never a
secret, never the path of a channel's URL. A 429 or 503 with Retry-After holds the row back that long.

A channel's messages about one alert go out in order (PagerDuty must never get the resolve before the
trigger): a row waits while an older one of the same alert and channel is not sent yet.

A worker that dies mid-send (SIGKILL, lost machine) leaves its row in "sending". The task is handed out
again (acks_late) under the same id, which is the claim token, so the redelivered task takes its own claim
back at once; otherwise the sweep takes the row once its lease runs out.

At-least-once edge, on purpose: if the worker died after the server accepted the message but before the
row was marked sent, that second attempt sends it again. A duplicate message in that narrow window is
better than a lost billing alert; channel messages carry X-Together-Dash-Delivery (the row's id) and
PagerDuty's dedup_key, so a receiver can drop such a duplicate.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db.models import F, Q
from django.utils import timezone

from together_dash.alerts import channels
from together_dash.alerts.emails import render_digest
from together_dash.alerts.models import AlertChannel, Notification, pending_sweep_filter
from together_dash.keys.crypto import DecryptionError
from together_dash.pollers.runs import PollReport, run_poller
from together_dash.together.redact import redact

logger = logging.getLogger(__name__)

# Longer than any SMTP conversation can take (EMAIL_TIMEOUT per socket operation).
SENDING_LEASE = timedelta(minutes=5)


class DeliveryError(Exception):
    """The receiver did not take the message; the notification is pending again and will be retried.

    retry_after: seconds the receiver asked us to wait (Retry-After), when it said.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def deliver(notification_id: int, token: str | None = None) -> bool:
    """Send one notification (an email inside a digest when many wait for the same people); True if sent now.

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
    notification = Notification.objects.select_related("channel").get(pk=notification_id)
    if notification.channel is not None:
        return _deliver_to_channel(notification, notification.channel, token)
    batch = [notification, *_claim_digest_peers(notification, token)]
    try:
        _send(batch)
    except Exception as exc:
        error = _error_text(exc)
        _release(token, error)
        raise DeliveryError(error) from exc
    _mark_sent(token, digest_size=len(batch) if len(batch) > 1 else 0)
    return True


def _deliver_to_channel(notification: Notification, channel: AlertChannel, token: str) -> bool:
    """POST the message to its channel, after any older message about the same alert."""
    if not channel.enabled:
        _finish(token, Notification.Status.SKIPPED, "channel disabled")
        return False
    try:
        _check_turn(notification)
        channels.send(channel, notification)
    except DecryptionError:
        error = f"{channel.name}: its target or secret cannot be decrypted with FIELD_ENCRYPTION_KEYS"
        _release(token, error)
        raise DeliveryError(error) from None
    except Exception as exc:
        error = channels.error_text(channel, exc)
        retry_after = exc.retry_after if isinstance(exc, channels.ChannelError) else None
        _release(token, error, retry_after)
        raise DeliveryError(error, retry_after) from None  # not chained: the cause may name the URL
    _mark_sent(token)
    return True


def _check_turn(notification: Notification) -> None:
    waiting = Notification.Status.PENDING, Notification.Status.SENDING
    earlier = Notification.objects.filter(
        alert_id=notification.alert_id, channel_id=notification.channel_id, pk__lt=notification.pk
    )
    if notification.alert_id is not None and earlier.filter(status__in=waiting).exists():
        raise channels.ChannelError("waiting for an earlier message about this alert to be delivered")


def _mark_sent(token: str, digest_size: int = 0) -> None:
    Notification.objects.filter(claim_token=token, status=Notification.Status.SENDING).update(
        status=Notification.Status.SENT, sent_at=timezone.now(), last_error="", digest_size=digest_size
    )


def _finish(token: str, status: str, error: str) -> None:
    Notification.objects.filter(claim_token=token, status=Notification.Status.SENDING).update(
        status=status, claim_token="", last_error=error
    )


def _claim_digest_peers(notification: Notification, token: str) -> list[Notification]:
    """Other pending notifications for the same people, from the last few seconds, when there are many."""
    since = timezone.now() - timedelta(seconds=settings.ALERT_DIGEST_WINDOW_SECONDS)
    peers = Notification.objects.filter(
        status=Notification.Status.PENDING,
        channel__isnull=True,
        recipients=notification.recipients,
        created_at__gte=since,
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


def _release(token: str, error: str, retry_after: float | None = None) -> None:
    """Back to pending with the reason, so the next attempt (retry or sweep) can claim it."""
    logger.warning("alert notification not sent, will retry: %s", error)
    not_before = timezone.now() + timedelta(seconds=retry_after) if retry_after else None
    Notification.objects.filter(claim_token=token, status=Notification.Status.SENDING).update(
        status=Notification.Status.PENDING, claim_token="", last_error=error, not_before=not_before
    )


def _error_text(exc: Exception) -> str:
    secrets = tuple(s for s in (getattr(settings, "EMAIL_HOST_PASSWORD", ""),) if s)
    return redact(f"{type(exc).__name__}: {exc}", secrets)[:500]


def pending(limit: int = 200) -> list[tuple[int, int | None]]:
    """(id, channel id) of what waits to go out (and any a dead worker left in sending), oldest first."""
    query = Notification.objects.filter(pending_sweep_filter(timezone.now(), SENDING_LEASE))
    return list(query.order_by("created_at", "id").values_list("id", "channel_id")[:limit])


def deliver_pending(limit: int = 200) -> int:
    """The sweep: send what is waiting; after a failure, skip the rest of that route (email or a channel).

    The rest of a failed route would fail too (and each could wait out a timeout), while the other
    routes are unaffected: one dead channel holds up neither email nor the other channels.
    """
    sent, broken = 0, set()
    for notification_id, channel_id in pending(limit):
        if channel_id in broken:
            continue
        try:
            sent += deliver(notification_id)
        except DeliveryError:
            broken.add(channel_id)
    return sent


REDELIVERY_TASK = "redeliver_alerts"  # its name in pollers/schedule.py, also its heartbeat's


def scheduled_redelivery(token: str | None = None) -> int:
    """deliver_pending() under its periodic task's lease; a run that left mail pending records an error."""

    def body(report: PollReport) -> None:
        report.count("sent", deliver_pending())
        waiting = len(pending())
        report.count("pending", waiting)
        if waiting:
            last = Notification.objects.filter(status=Notification.Status.PENDING).exclude(last_error="")
            error = last.order_by("-id").values_list("last_error", flat=True).first()
            if error:
                raise DeliveryError(f"{waiting} alert notification(s) still pending: {error}")

    report = run_poller(REDELIVERY_TASK, body, token)
    return report.counts.get("sent", 0) if report.claimed else 0
