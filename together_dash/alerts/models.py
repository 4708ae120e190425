"""Alert rules, one state machine per (rule, subject), its transition history, the channels and the outbox.

Every transition is claimed with a conditional UPDATE (healthchecks' sendalerts.py): many workers, a
duplicated beat or two proxy processes may all see the same 402, but only the one whose UPDATE changed a
row writes the event and, in the same transaction, its notifications: one email and one per channel
(Slack, webhook, PagerDuty). Every notification row exists before any SMTP or HTTP call.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from together_dash.alerts import channels
from together_dash.alerts.emails import render_alert
from together_dash.alerts.kinds import DEFAULTS, MEANING, Kind, unknown_kinds
from together_dash.keys import crypto

logger = logging.getLogger(__name__)


class AlertRule(models.Model):
    """What to watch, when to fire, how often to remind, and who else hears about it."""

    kind = models.CharField(max_length=20, choices=Kind.choices, unique=True)
    enabled = models.BooleanField(default=True)
    threshold = models.FloatField(default=1)
    window_minutes = models.PositiveIntegerField(default=10)
    # 0: one email when it fires and one when it resolves, no reminders in between.
    renotify_minutes = models.PositiveIntegerField(default=240)
    # Besides settings.ALERT_EMAILS; comma or newline separated.
    recipients = models.TextField(
        blank=True, help_text="Extra addresses, comma separated, besides ALERT_EMAILS."
    )
    # Small per-rule memory between evaluations (e.g. the last dropped-logs count seen).
    memory = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        ordering = ["kind"]

    def __str__(self) -> str:
        return self.get_kind_display()

    @property
    def meaning(self) -> str:
        return MEANING.get(self.kind, "")

    @property
    def notify_resolved(self) -> bool:
        defaults = DEFAULTS.get(self.kind)
        return defaults.notify_resolved if defaults else True

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.window_minutes)

    @classmethod
    def ensure_defaults(cls) -> None:
        """One rule per kind with its defaults; existing rules (as ops edited them) are left alone."""
        for kind, defaults in DEFAULTS.items():
            cls.objects.get_or_create(
                kind=kind,
                defaults={
                    "threshold": defaults.threshold,
                    "window_minutes": defaults.window_minutes,
                    "renotify_minutes": defaults.renotify_minutes,
                },
            )

    def extra_recipients(self) -> list[str]:
        return [a.strip() for a in self.recipients.replace("\n", ",").split(",") if a.strip()]

    def recipients_for_delivery(self) -> list[str]:
        """ALERT_EMAILS, this rule's and email channels', without users who muted it; sorted for digests."""
        listed = [
            *settings.ALERT_EMAILS,
            *self.extra_recipients(),
            *AlertChannel.objects.addresses_for(self.kind),
        ]
        addresses = {a.lower() for a in listed}
        muted = {e.lower() for e in Mute.objects.filter(rule=self).values_list("user__email", flat=True) if e}
        return sorted(addresses - muted)


class Alert(models.Model):
    """The state of one rule for one subject ("key:3", "poller:poll_models", "category:server")."""

    class State(models.TextChoices):
        OK = "ok"
        FIRING = "firing"
        RESOLVED = "resolved"

    rule = models.ForeignKey(AlertRule, models.CASCADE, related_name="alerts")
    subject = models.CharField(max_length=200)
    label = models.CharField(max_length=300, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.OK)
    fired_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    last_notified_at = models.DateTimeField(null=True, blank=True)
    fire_count = models.PositiveIntegerField(default=0)
    context = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-fired_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["rule", "subject"], name="alert_rule_subject_unique")]
        indexes = [models.Index(fields=["state", "rule"], name="alert_state_rule_idx")]

    def __str__(self) -> str:
        return f"{self.rule.kind} {self.subject} {self.state}"

    @property
    def is_firing(self) -> bool:
        return self.state == self.State.FIRING

    @classmethod
    def for_subject(cls, rule: AlertRule, subject: str) -> Alert:
        """The alert row of (rule, subject), created in state ok; the unique constraint settles races."""
        alert, _ = cls.objects.get_or_create(rule=rule, subject=subject)
        return alert

    def fire(
        self, context: dict[str, Any], label: str = "", now: datetime | None = None
    ) -> Notification | None:
        """ok/resolved -> firing; returns the notification when this caller won the transition."""
        now = now or timezone.now()
        with transaction.atomic():
            claimed = Alert.objects.filter(pk=self.pk, state__in=[self.State.OK, self.State.RESOLVED]).update(
                state=self.State.FIRING,
                fired_at=now,
                resolved_at=None,
                last_notified_at=now,
                fire_count=models.F("fire_count") + 1,
                context=context,
                label=label[:300] or self.label,
            )
            if not claimed:
                return None
            self.refresh_from_db()
            return self._record(AlertEvent.Transition.FIRED, now)

    def resolve(
        self, context: dict[str, Any] | None = None, now: datetime | None = None
    ) -> Notification | None:
        """firing -> resolved; the winner writes the event and, if the rule says so, the notice."""
        now = now or timezone.now()
        merged = {**self.context, **(context or {})}
        with transaction.atomic():
            claimed = Alert.objects.filter(pk=self.pk, state=self.State.FIRING).update(
                state=self.State.RESOLVED, resolved_at=now, context=merged
            )
            if not claimed:
                return None
            self.refresh_from_db()
            return self._record(AlertEvent.Transition.RESOLVED, now, notify=self.rule.notify_resolved)

    def is_renotify_due(self, now: datetime) -> bool:
        if not self.rule.renotify_minutes or not self.is_firing or self.last_notified_at is None:
            return False
        return self.last_notified_at <= now - timedelta(minutes=self.rule.renotify_minutes)

    def renotify_if_due(
        self, now: datetime | None = None, context: dict[str, Any] | None = None
    ) -> Notification | None:
        """A reminder while firing, at most once per renotify interval, claimed like a transition."""
        now = now or timezone.now()
        if not self.rule.renotify_minutes:
            return None
        due = now - timedelta(minutes=self.rule.renotify_minutes)
        merged = {**self.context, **(context or {})}
        with transaction.atomic():
            claimed = Alert.objects.filter(
                pk=self.pk, state=self.State.FIRING, last_notified_at__lte=due
            ).update(last_notified_at=now, context=merged)
            if not claimed:
                return None
            self.refresh_from_db()
            return self._record(AlertEvent.Transition.RENOTIFIED, now)

    def _record(self, transition: str, now: datetime, notify: bool = True) -> Notification | None:
        """The event and its outbox rows (email, and each channel that hears this kind); returns the first.

        The caller holds the transaction of its claim, so the event and every row commit together.
        """
        event = AlertEvent.objects.create(alert=self, transition=transition, at=now, context=self.context)
        hearing = [
            channel
            for channel in AlertChannel.objects.hearing(self.rule.kind)
            if channels.wants(channel.kind, transition, notify)
        ]
        if hearing:
            message = channels.message_for(self, transition, AlertChannel.objects.known_secrets())
        sent_by_channels = [Notification.for_channel(c, message, self, event) for c in hearing]
        if not notify:
            return sent_by_channels[0] if sent_by_channels else None
        recipients = self.rule.recipients_for_delivery()
        if not recipients and sent_by_channels:
            return sent_by_channels[0]  # the channels carry it; no "no recipients" row beside them
        subject, text, html = render_alert(self, transition)
        return Notification.objects.create(
            alert=self,
            event=event,
            transition=transition,
            recipients=",".join(recipients),
            subject=subject,
            body_text=text,
            body_html=html,
            status=Notification.Status.PENDING if recipients else Notification.Status.SKIPPED,
            last_error="" if recipients else "no recipients: set ALERT_EMAILS or the rule's recipients",
        )


class AlertEvent(models.Model):
    """One transition of an alert, kept as history (healthchecks' Flip)."""

    class Transition(models.TextChoices):
        FIRED = "fired"
        RENOTIFIED = "renotified"
        RESOLVED = "resolved"

    alert = models.ForeignKey(Alert, models.CASCADE, related_name="events")
    transition = models.CharField(max_length=12, choices=Transition.choices)
    at = models.DateTimeField(default=timezone.now)
    context = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["-at"], name="alertevent_time_idx")]

    def __str__(self) -> str:
        return f"{self.alert} {self.transition} {self.at:%Y-%m-%d %H:%M:%S}"


class AlertChannelQuerySet(models.QuerySet):
    def hearing(self, kind: str) -> list[AlertChannel]:
        """Enabled channels besides email that take alerts of this kind."""
        rows = self.filter(enabled=True).exclude(kind=AlertChannel.Kind.EMAIL).order_by("id")
        return [channel for channel in rows if channel.hears(kind)]

    def addresses_for(self, kind: str) -> list[str]:
        """The addresses of enabled email channels that take alerts of this kind."""
        addresses: list[str] = []
        for channel in self.filter(enabled=True, kind=AlertChannel.Kind.EMAIL).order_by("id"):
            if not channel.hears(kind):
                continue
            try:
                addresses += channels.clean_addresses(channel.target)
            except (crypto.DecryptionError, ValidationError):
                # One broken channel must not stop the transition (and every other email) being written.
                logger.error("alert channel %s: its addresses cannot be read; re-enter them", channel.name)
        return addresses

    def known_secrets(self) -> tuple[str, ...]:
        """Every channel's secret, URL and URL path: what a message must never carry."""
        found: list[str] = []
        for channel in self.all():
            try:
                found += channels.secrets_of(channel)
            except crypto.DecryptionError:
                continue  # nothing of it can leak that we could recognise
        return tuple(found)


class AlertChannel(models.Model):
    """Somewhere alerts go besides ALERT_EMAILS: more addresses, Slack, a signed webhook, PagerDuty.

    Targets and secrets are encrypted at rest (a Slack webhook URL is itself a credential: its path is
    the token); pages show target_hint and, of a secret, its last four characters.
    """

    class Kind(models.TextChoices):
        EMAIL = channels.EMAIL, "Email"
        SLACK = channels.SLACK, "Slack incoming webhook"
        WEBHOOK = channels.WEBHOOK, "Webhook (signed JSON)"
        PAGERDUTY = channels.PAGERDUTY, "PagerDuty Events API v2"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    name = models.CharField(max_length=100, unique=True)
    target_encrypted = models.TextField(editable=False)
    target_hint = models.CharField(max_length=300, editable=False)
    secret_encrypted = models.TextField(blank=True, editable=False)
    secret_last_four = models.CharField(max_length=4, blank=True, editable=False)
    # Alert kinds (kinds.Kind values) this channel takes; empty: every kind.
    kinds = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = AlertChannelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    @property
    def target(self) -> str:
        """The plaintext target; for sending only, never for display (target_hint is)."""
        return crypto.decrypt(self.target_encrypted) if self.target_encrypted else ""

    @property
    def secret(self) -> str:
        """The plaintext secret (webhook HMAC key, PagerDuty routing key); for sending only."""
        return crypto.decrypt(self.secret_encrypted) if self.secret_encrypted else ""

    @property
    def secret_hint(self) -> str:
        return f"…{self.secret_last_four}" if self.secret_encrypted else ""

    def set_target(self, target: str) -> None:
        """Check the target for this channel's kind, then store it encrypted with its hint."""
        target = channels.clean_target(self.kind, target)
        self.target_encrypted = crypto.encrypt(target)
        self.target_hint = channels.target_hint(self.kind, target)

    def set_secret(self, secret: str) -> None:
        secret = secret.strip()
        self.secret_encrypted = crypto.encrypt(secret) if secret else ""
        self.secret_last_four = secret[-4:] if len(secret) >= 12 else ""

    def hears(self, kind: str) -> bool:
        return not self.kinds or kind in self.kinds

    def clean(self) -> None:
        unknown = unknown_kinds(self.kinds or [])
        if unknown:
            raise ValidationError({"kinds": f"Unknown alert kinds: {', '.join(unknown)}."})
        if self.kind in (self.Kind.WEBHOOK, self.Kind.PAGERDUTY) and not self.secret_encrypted:
            what = "an HMAC secret" if self.kind == self.Kind.WEBHOOK else "a routing key"
            raise ValidationError(f"A {self.get_kind_display()} channel needs {what}.")


class Notification(models.Model):
    """The outbox: written before sending, claimed pending -> sending, marked sent once the receiver said yes.

    channel is empty for the email (to recipients); a channel's row holds the JSON message it is sent.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        SKIPPED = "skipped"

    alert = models.ForeignKey(Alert, models.CASCADE, null=True, blank=True, related_name="notifications")
    event = models.ForeignKey(AlertEvent, models.SET_NULL, null=True, blank=True, related_name="+")
    # Removing a channel removes what was still to be sent to it (and its delivery history).
    channel = models.ForeignKey(
        AlertChannel, models.CASCADE, null=True, blank=True, related_name="notifications"
    )
    transition = models.CharField(max_length=12, blank=True)
    recipients = models.TextField(blank=True)  # sorted, comma separated: equal lists compare equal
    subject = models.CharField(max_length=300)
    body_text = models.TextField()
    body_html = models.TextField(blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=32, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # Set when this notification went out inside a digest email instead of on its own.
    digest_size = models.PositiveIntegerField(default=0)
    # Not to be tried before this (a receiver's Retry-After).
    not_before = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"], name="notification_status_idx")]
        constraints = [
            # One send per channel per transition, whatever the number of workers.
            models.UniqueConstraint(
                fields=["event", "channel"],
                condition=Q(channel__isnull=False),
                name="notification_event_channel_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.subject} [{self.status}]"

    @property
    def recipient_list(self) -> list[str]:
        return [a for a in self.recipients.split(",") if a]

    @property
    def destination(self) -> str:
        """Who it goes to, as pages show it: the channel's name, or the email's recipients."""
        return str(self.channel.name) if self.channel_id else self.recipients

    @classmethod
    def for_channel(
        cls,
        channel: AlertChannel,
        message: channels.Message,
        alert: Alert | None = None,
        event: AlertEvent | None = None,
    ) -> Notification:
        """The row that tells one channel one message (a transition, or a test without an alert)."""
        return cls.objects.create(
            alert=alert,
            event=event,
            channel=channel,
            transition=message.transition,
            subject=message.summary[:300],
            body_text=channels.serialized(channels.body_for(channel.kind, message)),
        )


class Mute(models.Model):
    """A user who does not want a rule's emails (others still get them)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="+")
    rule = models.ForeignKey(AlertRule, models.CASCADE, related_name="mutes")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "rule"], name="mute_user_rule_unique")]

    def __str__(self) -> str:
        return f"{self.user_id} mutes {self.rule.kind}"


def pending_sweep_filter(now: datetime, lease: timedelta) -> Q:
    """Pending rows (not held back by a Retry-After), and rows stuck in sending past the lease."""
    due = Q(not_before__isnull=True) | Q(not_before__lte=now)
    return (Q(status=Notification.Status.PENDING) & due) | Q(
        status=Notification.Status.SENDING, claimed_at__lt=now - lease
    )
