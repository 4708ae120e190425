"""Admin for polled dedicated endpoints, their state changes and the hardware prices: read-only."""
from __future__ import annotations

from django.contrib import admin

from together_dash.endpoints.models import Endpoint, EndpointStateChange, Hardware
from together_dash.pollers.admin import PolledDataAdmin


class EndpointStateChangeInline(admin.TabularInline):
    model = EndpointStateChange
    extra = 0
    can_delete = False
    fields = ("at", "previous_state", "state", "previous_seen_at")
    readonly_fields = fields
    ordering = ("-at",)

    def has_add_permission(self, request: object, obj: object | None = None) -> bool:
        return False


@admin.register(Endpoint)
class EndpointAdmin(PolledDataAdmin):
    list_display = (
        "name", "state", "state_since", "hardware", "min_replicas", "max_replicas", "inactive_timeout",
        "owner", "upstream_key", "last_seen", "gone_at",
    )
    list_filter = ("state", "hardware", "upstream_key")
    search_fields = ("endpoint_id", "name", "model")
    list_select_related = ("upstream_key",)
    inlines = [EndpointStateChangeInline]


@admin.register(Hardware)
class HardwareAdmin(PolledDataAdmin):
    list_display = (
        "hardware_id", "cents_per_minute", "price_per_minute_usd", "gpu_type", "gpu_count", "last_seen",
    )
    search_fields = ("hardware_id", "gpu_type")
