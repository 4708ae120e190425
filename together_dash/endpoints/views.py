"""The endpoints page (every dedicated endpoint: state, hardware, price, uptime, cost and traffic today) and
one endpoint's page with its state timeline."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from together_dash.core.roles import viewer_required
from together_dash.endpoints.models import Endpoint, EndpointStateChange
from together_dash.endpoints.polling import POLLER
from together_dash.endpoints.usage import EndpointUsage, start_of_today, usage_today
from together_dash.keys.models import TogetherKey
from together_dash.pollers.models import PollerHeartbeat, PollerKeyState

TIMELINE_CAP = 200


def _poll_status() -> dict[str, Any]:
    """The poller's last run and the keys whose last poll failed: what an empty or stale page needs."""
    return {
        "heartbeat": PollerHeartbeat.objects.filter(name=POLLER).first(),
        "failing_keys": list(
            PollerKeyState.objects.filter(poller=POLLER, consecutive_failures__gt=0).select_related("key")
        ),
        "has_keys": TogetherKey.objects.filter(status=TogetherKey.Status.ACTIVE).exists(),
    }


def _total(usages: list[EndpointUsage], name: str) -> Decimal:
    return sum((getattr(u, name) or Decimal(0) for u in usages), Decimal(0))


@require_GET
@viewer_required
def endpoint_list(request: HttpRequest) -> HttpResponse:
    """Listed endpoints, and those deleted today (they billed today too), busiest bill first."""
    now = timezone.now()
    today = start_of_today(now)
    shown = Endpoint.objects.filter(Q(gone_at__isnull=True) | Q(gone_at__gte=today))
    # Model ordering is by name; the deleted ones go last.
    endpoints = sorted(shown.select_related("upstream_key"), key=lambda e: e.gone_at is not None)
    usages = usage_today(endpoints, now)
    started = [u for u in usages if u.endpoint.is_started]
    context = {
        "usages": usages,
        "today": today,
        "now": now,
        "cost_today": _total(usages, "cost"),
        "billing_per_hour": _total(started, "price_per_hour"),
        "started": len(started),
        "unpriced": [u for u in usages if u.hardware is None],
        **_poll_status(),
    }
    return render(request, "endpoints/list.html", context)


@require_GET
@viewer_required
def endpoint_detail(request: HttpRequest, endpoint_id: str) -> HttpResponse:
    """One endpoint: its facts, today's uptime, cost and traffic, and every state change seen."""
    endpoint = get_object_or_404(Endpoint.objects.select_related("upstream_key"), endpoint_id=endpoint_id)
    now = timezone.now()
    newest_first = EndpointStateChange.objects.filter(endpoint=endpoint).order_by("-at", "-id")
    changes = list(newest_first[: TIMELINE_CAP + 1])
    context = {
        "endpoint": endpoint,
        "usage": usage_today([endpoint], now)[0],
        "changes": changes[:TIMELINE_CAP],
        "changes_capped": len(changes) > TIMELINE_CAP,
        "timeline_cap": TIMELINE_CAP,
        "now": now,
        **_poll_status(),
    }
    return render(request, "endpoints/detail.html", context)
