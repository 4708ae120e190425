"""/metrics: the Prometheus scrape, behind METRICS_TOKEN."""
from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseNotFound
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from together_dash.metrics.exposition import SERIES, exposition
from together_dash.traffic.api import bearer_token

TEXT = "text/plain; charset=utf-8"


@require_GET
@never_cache
def scrape(request: HttpRequest) -> HttpResponse:
    """Every series, or only ?series=proxy or ?series=account (one job per machine, one for the account)."""
    token = settings.METRICS_TOKEN
    if not token:
        return HttpResponseNotFound("Metrics are off: set METRICS_TOKEN and give it to Prometheus.\n",
                                    content_type=TEXT)
    presented = bearer_token(request) or ""
    if not hmac.compare_digest(presented.encode(), token.encode()):
        response = HttpResponse("Send the metrics token: Authorization: Bearer <METRICS_TOKEN>.\n",
                                status=401, content_type=TEXT)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    series = request.GET.getlist("series") or SERIES
    if not set(series) <= set(SERIES):
        return HttpResponseBadRequest(f"series may be {' or '.join(SERIES)}.\n", content_type=TEXT)
    return HttpResponse(exposition(series), content_type=CONTENT_TYPE_LATEST)
