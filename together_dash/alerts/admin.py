"""Admin for alert rules, channels and the outbox; a channel's target and secret are write-only here."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from together_dash.alerts.delivery import DeliveryError
from together_dash.alerts.kinds import Kind
from together_dash.alerts.models import Alert, AlertChannel, AlertEvent, AlertRule, Mute, Notification
from together_dash.alerts.services import send_test_message
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


class AlertChannelForm(forms.ModelForm):
    """Target and secret are typed in, never shown back: blank when editing keeps what is stored."""

    target = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Email: addresses, comma separated. Slack: the incoming-webhook URL. Webhook: its https "
        "URL. PagerDuty: blank for events.pagerduty.com. When editing, blank keeps the stored one.",
    )
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Webhook: the HMAC secret. PagerDuty: the integration's routing key. "
        "When editing, blank keeps the stored one.",
    )
    kinds = forms.MultipleChoiceField(
        choices=Kind.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Alert kinds sent to this channel; none ticked: every kind.",
    )

    class Meta:
        model = AlertChannel
        fields = ("name", "kind", "enabled", "kinds")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        channel = self.instance
        channel.kind = data.get("kind") or channel.kind
        retarget = data.get("target") or not channel.target_encrypted or "kind" in self.changed_data
        if retarget and channel.kind and not self.has_error("kind"):
            try:
                channel.set_target(data.get("target") or channel.target)
            except forms.ValidationError as exc:
                self.add_error("target", exc)
        if data.get("secret"):
            channel.set_secret(data["secret"])
        return data


@admin.action(description="Send a test message")
def send_test(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[AlertChannel]) -> None:
    for channel in queryset:
        try:
            send_test_message(channel)
        except DeliveryError as exc:
            modeladmin.message_user(request, f"Not delivered: {exc}", messages.WARNING)
        else:
            modeladmin.message_user(request, f"Test message delivered to {channel.name}.", messages.SUCCESS)


@admin.register(AlertChannel)
class AlertChannelAdmin(admin.ModelAdmin):
    form = AlertChannelForm
    list_display = ("name", "kind", "target_hint", "secret_hint", "kinds", "enabled", "created_at")
    list_filter = ("kind", "enabled")
    fields = ("name", "kind", "target_hint", "target", "secret_hint", "secret", "kinds", "enabled")
    readonly_fields = ("target_hint", "secret_hint")
    actions = [send_test]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("subject", "destination", "status", "attempts", "last_error", "created_at", "sent_at")
    list_filter = ("status", "channel")
    list_select_related = ("channel",)
    readonly_fields = [f.name for f in Notification._meta.fields]
    actions = [send_now]


@admin.register(Mute)
class MuteAdmin(admin.ModelAdmin):
    list_display = ("user", "rule", "created_at")
