"""Poller heartbeats and per-key poll state: what every poller shares."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from together_dash.keys.models import TogetherKey

# A claimed run that has not finished after this long is presumed dead (worker killed, machine lost);
# the next run may take over. Longer than any poller's hard time limit (runs.POLL_LIMITS).
RUN_LEASE = timedelta(minutes=10)
STALE_FACTOR = 2


class PollerHeartbeat(models.Model):
    """When one poller last started, succeeded and failed; silent for 2x its interval means stale."""

    name = models.CharField(max_length=50, unique=True)
    interval_seconds = models.PositiveIntegerField(default=60)
    created_at = models.DateTimeField(default=timezone.now)
    last_started = models.DateTimeField(null=True, blank=True)
    last_finished = models.DateTimeField(null=True, blank=True)
    last_success = models.DateTimeField(null=True, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    # Redacted, and short: shown on pages and in alert emails.
    last_error = models.CharField(max_length=500, blank=True)
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    last_report = models.JSONField(default=dict, blank=True)
    run_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    # The lease of the run in progress: who holds it (Celery task id or a command's uuid) and since when.
    running_since = models.DateTimeField(null=True, blank=True)
    run_token = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def claim(cls, name: str, token: str, interval_seconds: int) -> bool:
        """Take the run lease: free, expired, or already ours (a redelivered task keeps its id)."""
        now = timezone.now()
        cls.objects.get_or_create(name=name, defaults={"interval_seconds": interval_seconds})
        free = Q(running_since__isnull=True) | Q(running_since__lt=now - RUN_LEASE) | Q(run_token=token)
        claimed = cls.objects.filter(free, name=name).update(
            running_since=now, run_token=token, last_started=now, interval_seconds=interval_seconds
        )
        return claimed == 1

    @classmethod
    def finish(cls, name: str, token: str, duration_ms: int, report: dict[str, Any], error: str = "") -> None:
        """Record the end of a run and release the lease."""
        now = timezone.now()
        fields: dict[str, Any] = {
            "last_finished": now,
            "last_duration_ms": duration_ms,
            "last_report": report,
            "run_count": models.F("run_count") + 1,
            "running_since": None,
            "run_token": "",
        }
        if error:
            fields.update(last_error_at=now, last_error=error[:500], error_count=models.F("error_count") + 1)
        else:
            fields["last_success"] = now
        cls.objects.filter(name=name, run_token=token).update(**fields)

    @property
    def silent_since(self) -> datetime:
        return self.last_success or self.created_at

    def is_stale_at(self, now: datetime) -> bool:
        """No successful run for more than twice the interval."""
        return now - self.silent_since > timedelta(seconds=STALE_FACTOR * self.interval_seconds)

    @property
    def is_stale(self) -> bool:
        return self.is_stale_at(timezone.now())

    @property
    def is_failing(self) -> bool:
        """The latest finished run failed."""
        return self.last_error_at is not None and (
            self.last_success is None or self.last_error_at > self.last_success
        )

    @property
    def status(self) -> str:
        if self.is_stale:
            return "stale"
        if self.is_failing:
            return "failing"
        return "ok" if self.last_success else "waiting"


class PollerKeyStateQuerySet(models.QuerySet):
    def failing_with(self, kind: str) -> PollerKeyStateQuerySet:
        """(poller, key) pairs whose latest poll failed with this error kind and has not succeeded since."""
        failed = self.filter(last_error_kind=kind, last_error_at__isnull=False)
        return failed.filter(Q(last_success__isnull=True) | Q(last_success__lt=models.F("last_error_at")))


class PollerKeyState(models.Model):
    """How one poller fared with one key: last success, last error, and when to try again after a 429."""

    poller = models.CharField(max_length=50)
    key = models.ForeignKey(TogetherKey, models.CASCADE, related_name="+")
    last_success = models.DateTimeField(null=True, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_error_kind = models.CharField(max_length=40, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    retry_after = models.DateTimeField(null=True, blank=True)

    objects = PollerKeyStateQuerySet.as_manager()

    class Meta:
        ordering = ["poller", "key"]
        constraints = [models.UniqueConstraint(fields=["poller", "key"], name="pollerkeystate_unique")]

    def __str__(self) -> str:
        return f"{self.poller} / {self.key_id}"
