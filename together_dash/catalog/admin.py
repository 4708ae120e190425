"""Admin for the polled model catalog and its change events: read-only."""
from __future__ import annotations

from django.contrib import admin

from together_dash.catalog.models import ModelChange, ModelInfo
from together_dash.pollers.admin import PolledDataAdmin


class ModelChangeInline(admin.TabularInline):
    model = ModelChange
    extra = 0
    can_delete = False
    fields = ("at", "kind", "before", "after")
    readonly_fields = fields

    def has_add_permission(self, request: object, obj: object | None = None) -> bool:
        return False


@admin.register(ModelInfo)
class ModelInfoAdmin(PolledDataAdmin):
    list_display = (
        "model_id", "type", "organization", "context_length", "pricing_input", "pricing_output", "state",
        "last_seen", "removed_at", "needs_attention", "successor",
    )
    list_filter = ("state", "type", "organization")
    search_fields = ("model_id", "display_name")
    inlines = [ModelChangeInline]

    @admin.display(boolean=True, description="removed while in use")
    def needs_attention(self, obj: ModelInfo) -> bool:
        return obj.needs_attention


@admin.register(ModelChange)
class ModelChangeAdmin(PolledDataAdmin):
    list_display = ("at", "kind", "model", "before", "after")
    list_filter = ("kind",)
    search_fields = ("model__model_id",)
    date_hierarchy = "at"
    list_select_related = ("model",)
