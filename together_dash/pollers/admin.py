"""Admin for poller heartbeats and per-key poll state: read-only, it is polled data."""
from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from together_dash.pollers.models import PollerHeartbeat, PollerKeyState


class PolledDataAdmin(admin.ModelAdmin):
    """Pollers write these rows; people read them (and may delete junk)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False


@admin.register(PollerHeartbeat)
class PollerHeartbeatAdmin(PolledDataAdmin):
    list_display = (
        "name", "status", "interval_seconds", "last_success", "last_error_at", "last_error",
        "last_duration_ms",
    )
    readonly_fields = ("status",)

    @admin.display(description="status")
    def status(self, obj: PollerHeartbeat) -> str:
        return obj.status


@admin.register(PollerKeyState)
class PollerKeyStateAdmin(PolledDataAdmin):
    list_display = (
        "poller", "key", "last_success", "last_error_at", "last_error_kind", "consecutive_failures",
        "retry_after",
    )
    list_filter = ("poller", "last_error_kind")
    list_select_related = ("key",)
