"""The alerts pages: what is firing now, the history, the deliveries, per-user mutes; one alert in detail."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from together_dash.alerts.models import Alert, AlertChannel, AlertEvent, AlertRule, Mute, Notification
from together_dash.core.roles import viewer_required

HISTORY_SIZE = 100


@require_GET
@viewer_required
def alerts_page(request: HttpRequest) -> HttpResponse:
    """Firing alerts first, then the transition history, the outbox and the rules with mute buttons."""
    muted = set(Mute.objects.filter(user=request.user).values_list("rule_id", flat=True))
    context = {
        "firing": Alert.objects.filter(state=Alert.State.FIRING).select_related("rule").order_by("-fired_at"),
        "events": AlertEvent.objects.select_related("alert__rule")[:HISTORY_SIZE],
        "notifications": Notification.objects.select_related("alert__rule", "channel")[:HISTORY_SIZE],
        "rules": AlertRule.objects.all(),
        "channels": AlertChannel.objects.all(),
        "muted": muted,
    }
    return render(request, "alerts/alerts.html", context)


@require_GET
@viewer_required
def alert_detail(request: HttpRequest, alert_id: int) -> HttpResponse:
    """One alert: its state, and every transition with each delivery (email and per channel)."""
    alert = get_object_or_404(Alert.objects.select_related("rule"), pk=alert_id)
    events = list(alert.events.all()[:HISTORY_SIZE])
    deliveries: dict[int | None, list[Notification]] = {}
    for notification in alert.notifications.select_related("channel").order_by("created_at", "id"):
        deliveries.setdefault(notification.event_id, []).append(notification)
    rows = [(event, deliveries.get(event.pk, [])) for event in events]
    return render(request, "alerts/alert.html", {"alert": alert, "rows": rows})


@require_POST
@viewer_required
def mute_rule(request: HttpRequest, rule_id: int) -> HttpResponse:
    rule = get_object_or_404(AlertRule, pk=rule_id)
    Mute.objects.get_or_create(user=request.user, rule=rule)
    messages.success(request, f"You will no longer get emails for “{rule}”.")
    return HttpResponseRedirect(reverse("alerts-page"))


@require_POST
@viewer_required
def unmute_rule(request: HttpRequest, rule_id: int) -> HttpResponse:
    rule = get_object_or_404(AlertRule, pk=rule_id)
    Mute.objects.filter(user=request.user, rule=rule).delete()
    messages.success(request, f"You will get emails for “{rule}” again.")
    return HttpResponseRedirect(reverse("alerts-page"))
