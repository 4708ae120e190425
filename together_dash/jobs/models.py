"""Fine-tune jobs, their events, and batch jobs, upserted by their Together ids."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils import timezone

from together_dash.keys.models import TogetherKey
from together_dash.together.types import BatchStatus, FineTuneStatus


class JobQuerySet(models.QuerySet):
    def counts_by_status(self) -> dict[str, int]:
        """How many jobs are in each status, as last polled (one grouped count)."""
        return dict(self.values_list("status").annotate(n=models.Count("id")).order_by())


class FineTuneJobQuerySet(JobQuerySet):
    def waiting_too_long(self, now: datetime, threshold: timedelta) -> FineTuneJobQuerySet:
        """Pending or queued for longer than threshold."""
        return self.filter(
            status__in=FineTuneJob.WAITING_STATUSES, status_changed_at__lt=now - threshold
        )

    def failed_since(self, since: datetime) -> FineTuneJobQuerySet:
        """Jobs that turned error or user_error at or after `since`."""
        return self.filter(
            status__in=(FineTuneStatus.ERROR, FineTuneStatus.USER_ERROR), status_changed_at__gte=since
        )


class BatchJobQuerySet(JobQuerySet):
    def failed_since(self, since: datetime) -> BatchJobQuerySet:
        """Batches that turned failed or expired at or after `since`."""
        return self.filter(status__in=(BatchStatus.FAILED, BatchStatus.EXPIRED), status_changed_at__gte=since)

    def interrupted_by_credits(self, key_id: int | None) -> BatchJob | None:
        """The key's latest batch that a 402 stopped with requests left to resubmit, if any."""
        batches = self.filter(upstream_key_id=key_id, remainder_count__gt=0).order_by("-status_changed_at")
        return next((batch for batch in batches[:5] if batch.stopped_for_credits), None)


class FineTuneJob(models.Model):
    """A Together fine-tune job (ft-...), as last polled."""

    WAITING_STATUSES = (FineTuneStatus.PENDING, FineTuneStatus.QUEUED)

    job_id = models.CharField(max_length=100, unique=True)
    # The first key that listed the job; keys of one organization all see its jobs.
    upstream_key = models.ForeignKey(TogetherKey, models.SET_NULL, null=True, blank=True, related_name="+")
    status = models.CharField(max_length=20)
    base_model = models.CharField(max_length=255, blank=True)
    output_model = models.CharField(max_length=255, blank=True)
    training_file = models.CharField(max_length=100, blank=True)
    validation_file = models.CharField(max_length=100, blank=True)
    n_epochs = models.PositiveIntegerField(null=True, blank=True)
    epochs_completed = models.PositiveIntegerField(null=True, blank=True)
    total_steps = models.PositiveIntegerField(null=True, blank=True)
    steps_completed = models.PositiveIntegerField(null=True, blank=True)
    token_count = models.BigIntegerField(null=True, blank=True)
    param_count = models.BigIntegerField(null=True, blank=True)
    # Together's integer total_price; its unit is undocumented (reference §2.2), so it is kept as sent.
    total_price = models.BigIntegerField(null=True, blank=True)
    progress_pct = models.FloatField(null=True, blank=True)
    seconds_remaining = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    status_changed_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    stuck_since = models.DateTimeField(null=True, blank=True)
    # The status at which events were last fetched: events are fetched again when it differs.
    events_synced_status = models.CharField(max_length=20, blank=True)
    error_message = models.CharField(max_length=1000, blank=True)
    raw = models.JSONField(default=dict, blank=True)

    objects = FineTuneJobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "status_changed_at"], name="finetune_status_idx")]

    def __str__(self) -> str:
        return self.job_id

    @property
    def is_finished(self) -> bool:
        return self.status in FineTuneStatus.TERMINAL

    @property
    def failed(self) -> bool:
        return self.status in (FineTuneStatus.ERROR, FineTuneStatus.USER_ERROR)


def event_digest(created_at: datetime | None, type_normalized: str, message: str) -> str:
    """Identity of an event within its job: the API gives events no id."""
    stamp = created_at.isoformat() if created_at else ""
    return hashlib.sha1(f"{stamp}|{type_normalized}|{message}".encode(), usedforsecurity=False).hexdigest()


class FineTuneEvent(models.Model):
    """One event of a fine-tune job; `type` as sent (either case), `type_normalized` lower-cased."""

    job = models.ForeignKey(FineTuneJob, models.CASCADE, related_name="events")
    created_at = models.DateTimeField(null=True, blank=True)
    level = models.CharField(max_length=20, blank=True)
    type = models.CharField(max_length=60, blank=True)
    type_normalized = models.CharField(max_length=60, blank=True)
    message = models.TextField(blank=True)
    step = models.PositiveIntegerField(null=True, blank=True)
    digest = models.CharField(max_length=40)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["job", "digest"], name="finetuneevent_unique")]

    def __str__(self) -> str:
        return f"{self.job_id} {self.type_normalized}"

    @property
    def is_error(self) -> bool:
        return self.level.lower() == "error" or self.type_normalized.endswith("error")


class BatchJob(models.Model):
    """A Together batch job, as last polled, with what its output and error files said."""

    class FilesState(models.TextChoices):
        WAITING = "waiting"  # not finished: files are not final
        PENDING = "pending"  # finished, files not read yet
        PROCESSING = "processing"
        DONE = "done"
        FAILED = "failed"  # gave up after MAX_FILE_ATTEMPTS

    MAX_FILE_ATTEMPTS = 5

    batch_id = models.CharField(max_length=100, unique=True)
    upstream_key = models.ForeignKey(TogetherKey, models.SET_NULL, null=True, blank=True, related_name="+")
    status = models.CharField(max_length=20)
    endpoint = models.CharField(max_length=100, blank=True)
    model_id = models.CharField(max_length=255, blank=True)
    input_file_id = models.CharField(max_length=100, blank=True)
    output_file_id = models.CharField(max_length=100, blank=True)
    error_file_id = models.CharField(max_length=100, blank=True)
    error = models.CharField(max_length=1000, blank=True)
    progress = models.FloatField(null=True, blank=True)
    file_size_bytes = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    job_deadline = models.DateTimeField(null=True, blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    status_changed_at = models.DateTimeField(default=timezone.now)
    # From the files, once the batch has finished:
    request_count = models.PositiveIntegerField(null=True, blank=True)
    succeeded_count = models.PositiveIntegerField(null=True, blank=True)
    failed_count = models.PositiveIntegerField(null=True, blank=True)
    failed_sample = models.JSONField(default=list, blank=True)
    remainder_count = models.PositiveIntegerField(null=True, blank=True)
    remainder_file = models.CharField(max_length=255, blank=True)
    files_state = models.CharField(max_length=10, choices=FilesState.choices, default=FilesState.WAITING)
    files_claimed_at = models.DateTimeField(null=True, blank=True)
    files_attempts = models.PositiveSmallIntegerField(default=0)
    files_error = models.CharField(max_length=500, blank=True)
    raw = models.JSONField(default=dict, blank=True)

    objects = BatchJobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["files_state"], name="batch_files_state_idx")]

    def __str__(self) -> str:
        return self.batch_id

    @property
    def is_finished(self) -> bool:
        return self.status in BatchStatus.TERMINAL

    @property
    def progress_pct(self) -> float:
        """0-100 for a progress bar: Together's progress, 100 once completed."""
        if self.status == BatchStatus.COMPLETED:
            return 100.0
        return max(0.0, min(100.0, self.progress or 0.0))

    @property
    def stopped_for_credits(self) -> bool:
        """The batch stopped because the account ran out of credits (HTTP 402 upstream)."""
        text = self.error.lower()
        return "credit" in text or "402" in text

    @property
    def remainder_path(self) -> Path | None:
        """The stored remainder JSONL (requests with no output), ready to resubmit."""
        return remainder_dir() / self.remainder_file if self.remainder_file else None


def remainder_dir() -> Path:
    return Path(settings.VAR_DIR) / "batch-remainders"
