"""Admin for polled fine-tune jobs, their events, and batches: read-only."""
from __future__ import annotations

from django.contrib import admin

from together_dash.jobs.models import BatchJob, FineTuneEvent, FineTuneJob
from together_dash.pollers.admin import PolledDataAdmin


class FineTuneEventInline(admin.TabularInline):
    model = FineTuneEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "level", "type", "message", "step")
    readonly_fields = fields

    def has_add_permission(self, request: object, obj: object | None = None) -> bool:
        return False


@admin.register(FineTuneJob)
class FineTuneJobAdmin(PolledDataAdmin):
    list_display = (
        "job_id", "status", "base_model", "output_model", "progress_pct", "steps_completed", "total_steps",
        "created_at", "stuck_since", "upstream_key",
    )
    list_filter = ("status", "upstream_key")
    search_fields = ("job_id", "base_model", "output_model")
    list_select_related = ("upstream_key",)
    inlines = [FineTuneEventInline]


@admin.register(BatchJob)
class BatchJobAdmin(PolledDataAdmin):
    list_display = (
        "batch_id", "status", "model_id", "progress_pct", "succeeded_count", "failed_count",
        "remainder_count", "files_state", "created_at", "upstream_key",
    )
    list_filter = ("status", "files_state", "upstream_key")
    search_fields = ("batch_id", "model_id")
    list_select_related = ("upstream_key",)

    @admin.display(description="progress %")
    def progress_pct(self, obj: BatchJob) -> float:
        return round(obj.progress_pct, 1)
