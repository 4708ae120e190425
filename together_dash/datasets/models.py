"""Dataset validations run from the upload page, with their progress and result."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class DatasetValidation(models.Model):
    """One uploaded dataset and the validator's verdict on it."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    filename = models.CharField(max_length=255)
    # Where the upload waits for its validation; the file is deleted once validated.
    file_path = models.CharField(max_length=500, blank=True)
    size = models.BigIntegerField()
    purpose = models.CharField(max_length=20, default="fine-tune")
    model_id = models.CharField(max_length=255, blank=True)
    context_length = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)  # percent of the file read
    # The validator's report: {"ok", "format", "samples", "errors", "warnings"}.
    result = models.JSONField(null=True, blank=True)
    # Totals, including the problems past the listing cap.
    error_count = models.PositiveIntegerField(null=True, blank=True)
    warning_count = models.PositiveIntegerField(null=True, blank=True)
    failure = models.TextField(blank=True)  # why the validation itself could not run
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.filename} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)

    @property
    def ok(self) -> bool | None:
        """The verdict: None until the validation is done."""
        return None if self.result is None else bool(self.result["ok"])

    def progress_json(self) -> dict[str, Any]:
        """What the detail page polls while the validation runs."""
        result = self.result or {}
        return {
            "status": self.status,
            "progress": self.progress,
            "finished": self.is_finished,
            "ok": self.ok,
            "samples": result.get("samples"),
            "errors": self.error_count,
            "warnings": self.warning_count,
        }
