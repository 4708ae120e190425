from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from together_dash.alerts.models import Alert, AlertEvent, AlertRule, Mute, Notification
from together_dash.alerts.tasks import enqueue


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = (
        "kind",
        "enabled",
        "threshold",
        "window_minutes",
        "renotify_minutes",
        "recipients",
        "meaning",
    )
    list_editable = ("enabled", "threshold", "window_minutes", "renotify_minutes")
    readonly_fields = ("kind", "meaning")
    fields = ("kind", "meaning", "enabled", "threshold", "window_minutes", "renotify_minutes", "recipients")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # one rule per kind, created by the migration


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("rule", "subject", "label", "state", "fired_at", "resolved_at", "last_notified_at")
    list_filter = ("state", "rule")
    readonly_fields = [f.name for f in Alert._meta.fields]


@admin.register(AlertEvent)
class AlertEventAdmin(admin.ModelAdmin):
    list_display = ("alert", "transition", "at")
    readonly_fields = [f.name for f in AlertEvent._meta.fields]


@admin.action(description="Send again now (pending only)")
def send_now(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
    enqueue(queryset.filter(status=Notification.Status.PENDING))


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("subject", "status", "attempts", "last_error", "created_at", "sent_at")
    list_filter = ("status",)
    readonly_fields = [f.name for f in Notification._meta.fields]
    actions = [send_now]


@admin.register(Mute)
class MuteAdmin(admin.ModelAdmin):
    list_display = ("user", "rule", "created_at")
