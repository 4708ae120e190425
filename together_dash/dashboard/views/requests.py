"""The request log explorer: keyset pages of a bounded window, filters, and the matching CSV export."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from together_dash.core.roles import viewer_required
from together_dash.dashboard import queries
from together_dash.dashboard.palette import CATEGORY_LABELS
from together_dash.dashboard.ranges import Range
from together_dash.dashboard.views.common import filter_context, range_of
from together_dash.together.errors import TAXONOMY
from together_dash.traffic import listing
from together_dash.traffic.models import RequestBodySample, RequestLog

STATUS_MAX_DIGITS = 3


@require_GET
@viewer_required
def request_list(request: HttpRequest) -> HttpResponse:
    """Newest first, never more than one page of one window at a time."""
    rng = range_of(request)
    filters = _filters(request.GET, rng)
    span = listing.Window(rng.start, rng.end)
    problem = ""
    try:
        page = queries.request_page(
            span, filters, request.GET.get("older_than") or None, request.GET.get("newer_than") or None
        )
    except listing.FilterError as exc:
        problem, page = str(exc), queries.request_page(span, filters)
    shared = filter_context(rng)
    context = {
        **shared,
        "key_names": {key.id: key.name for key in shared["filter_keys"]},
        "page": page,
        "filters": filters,
        "kinds": sorted(TAXONOMY),
        "problem": problem,
        "csv_url": _csv_url(span, filters),
    }
    return render(request, "dashboard/requests.html", context)


@require_GET
@viewer_required
def request_detail(request: HttpRequest, log_id: int) -> HttpResponse:
    """One request: every captured field, what its error means, and its bodies when they were sampled."""
    log = get_object_or_404(
        RequestLog.objects.select_related("app_key", "upstream_key", "error_group"), pk=log_id
    )
    sample = RequestBodySample.objects.filter(request_log_id=log.pk).first()
    context = {
        "log": log,
        "info": TAXONOMY.get(log.kind) if log.category else None,
        "sample": sample,
        "redirected": bool(log.model_served and log.model_requested)
        and log.model_served != log.model_requested,
    }
    return render(request, "dashboard/request_detail.html", context)


def _filters(params: QueryDict, rng: Range) -> listing.RequestFilters:
    category = params.get("category")
    kind = params.get("kind")
    status = params.get("status", "").strip()
    return listing.RequestFilters(
        category=category if category in CATEGORY_LABELS else None,
        kind=kind if kind in TAXONOMY else None,
        model=rng.model,
        key_id=rng.key_id,
        status=int(status) if status.isdigit() and len(status) <= STATUS_MAX_DIGITS else None,
    )


def _csv_url(span: listing.Window, filters: listing.RequestFilters) -> str:
    """The CSV export of exactly this window and these filters (the API takes the same ones)."""
    params = {"start": span.start.isoformat(), "end": span.end.isoformat()}
    wanted = {
        "category": filters.category,
        "kind": filters.kind,
        "model": filters.model,
        "key": filters.key_id,
        "status": filters.status,
    }
    params.update({name: str(value) for name, value in wanted.items() if value is not None})
    return f"{reverse('api:export_requests')}?{urlencode(params)}"
