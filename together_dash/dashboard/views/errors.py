"""Error groups: the list, sortable and filterable, and one group with its cause, fix and occurrences."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from together_dash.core.roles import viewer_required
from together_dash.dashboard import queries
from together_dash.dashboard.palette import CATEGORY_COLORS, CATEGORY_LABELS
from together_dash.dashboard.views.common import filter_context, range_of, script_config
from together_dash.together.errors import TAXONOMY
from together_dash.traffic.models import ErrorGroup

SORTS: dict[str, str] = {"last_seen": "Last seen", "count": "Count", "first_seen": "First seen"}
STATES: tuple[str, ...] = ("open", "resolved", "all")
PAGE_SIZE = 50


def _choice(value: str | None, allowed: object, default: str | None = None) -> str | None:
    return value if value and value in allowed else default


@require_GET
@viewer_required
def error_list(request: HttpRequest) -> HttpResponse:
    """Groups seen within the range, filtered by state, category, kind, model and key."""
    rng = range_of(request)
    state = _choice(request.GET.get("state"), STATES, "open")
    category = _choice(request.GET.get("category"), CATEGORY_LABELS)
    kind = _choice(request.GET.get("kind"), TAXONOMY)
    sort = _choice(request.GET.get("sort"), SORTS, "last_seen")
    groups = queries.error_groups(rng, None if state == "all" else state, category, kind, sort)
    context = {
        **filter_context(rng),
        "page": Paginator(groups, PAGE_SIZE).get_page(request.GET.get("page")),
        "state": state,
        "category": category,
        "kind": kind,
        "sort": sort,
        "states": STATES,
        "kinds": sorted(TAXONOMY),
        "sorts": SORTS,
    }
    return render(request, "dashboard/errors.html", context)


@require_GET
@viewer_required
def error_detail(request: HttpRequest, group_id: int) -> HttpResponse:
    """One group: what it means and what to do, how often it happened, and its latest occurrences."""
    group = get_object_or_404(ErrorGroup.objects.select_related("upstream_key"), pk=group_id)
    rng = range_of(request)
    found = queries.occurrences(group, rng)
    chart = {
        "label": "Occurrences",
        "color": CATEGORY_COLORS.get(group.category, "#4b5563"),
        "bucketSeconds": int(found.timeline.size.total_seconds()),
        "buckets": [bucket.isoformat() for bucket in found.timeline.buckets()],
        "counts": found.counts,
    }
    context = {
        **filter_context(rng),
        "group": group,
        "info": group.info,
        "occurrence_chart": chart,
        "occurrences_total": sum(found.counts),
        "occurrences_capped": found.capped,
        "occurrence_cap": queries.OCCURRENCE_CAP,
        "recent": queries.recent_occurrences(group),
        "suggestion": queries.suggested_alternative(group),
        "config": script_config(),
    }
    return render(request, "dashboard/error_detail.html", context)
