"""Liveness and metrics."""
from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


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
