"""Admin for request logs, error groups and rollups: read-only, since they are written by recording only."""
from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from together_dash.traffic.models import ErrorGroup, RequestLog, UsageDay, UsageHour, UsageMinute


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows come from the proxy and the ingest API; editing them here would make the charts lie."""

    # A full COUNT(*) over tens of millions of rows takes seconds on every page view.
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RequestLog)
class RequestLogAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "method", "endpoint", "model_requested", "status_code", "category", "kind",
                    "latency_ms", "upstream_key", "app_key")
    list_filter = ("category", "source", "stream")
    list_select_related = ("upstream_key", "app_key")
    ordering = ("-created_at", "-id")


@admin.register(ErrorGroup)
class ErrorGroupAdmin(ReadOnlyAdmin):
    list_display = ("category", "kind", "model", "endpoint", "upstream_key", "count", "last_seen", "state")
    list_filter = ("state", "category")
    list_select_related = ("upstream_key",)
    ordering = ("-last_seen",)
    actions = ("resolve",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("traffic.change_errorgroup")

    @admin.action(description="Mark resolved (it reopens if the error comes back)")
    def resolve(self, request: HttpRequest, queryset: QuerySet[ErrorGroup]) -> None:
        resolved = sum(group.resolve() for group in queryset)
        self.message_user(request, f"Resolved {resolved} error group(s).", messages.SUCCESS)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in ErrorGroup._meta.fields]


@admin.register(UsageMinute, UsageHour, UsageDay)
class UsageRollupAdmin(ReadOnlyAdmin):
    list_display = ("bucket", "upstream_key", "model", "requests", "errors", "total_tokens", "cost_usd")
    list_select_related = ("upstream_key",)
    ordering = ("-bucket",)
