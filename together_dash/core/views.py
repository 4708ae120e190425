"""Liveness, metrics and the overview page."""
from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from together_dash.core.roles import viewer_required
from together_dash.traffic.models import CATEGORY_CHOICES, ErrorGroup, RequestLog


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness plus a database round trip; 503 when the database is unreachable."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return JsonResponse({"status": "error", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition of this process's metrics."""
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)


@viewer_required
def overview(request: HttpRequest) -> HttpResponse:
    """Last 24 hours at a glance: volume, errors by category, open error groups."""
    since = timezone.now() - timedelta(hours=24)
    recent = RequestLog.objects.filter(created_at__gte=since)
    totals = recent.aggregate(requests=Count("id"), errors=Count("id", filter=~Q(category="")))
    by_category = dict(
        recent.exclude(category="").values_list("category").annotate(n=Count("id")).values_list("category", "n")
    )
    chart = {
        "labels": [label for _, label in CATEGORY_CHOICES],
        "values": [by_category.get(value, 0) for value, _ in CATEGORY_CHOICES],
    }
    groups = ErrorGroup.objects.filter(state=ErrorGroup.State.OPEN).order_by("-last_seen")[:10]
    context = {"totals": totals, "chart": chart, "groups": groups}
    return render(request, "core/overview.html", context)
