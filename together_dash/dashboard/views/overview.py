"""The overview: is Together hurting us, why, and what to do, for the chosen range and filters."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from together_dash.core.roles import viewer_required
from together_dash.dashboard import queries
from together_dash.dashboard.views.common import (
    figure_cards,
    filter_context,
    proxy_base_url,
    range_of,
    script_config,
)
from together_dash.dashboard.views.runway import runway_context


@require_GET
@viewer_required
def overview(request: HttpRequest) -> HttpResponse:
    """Headline figures, credit runway, error categories, quota, fine-tunes, open error groups, pollers."""
    rng = range_of(request)
    comparison = queries.compared_figures(rng)
    context = {
        **filter_context(rng),
        "cards": figure_cards(comparison),
        "has_traffic": comparison.current.requests > 0,
        "top_groups": queries.top_error_groups(rng),
        "finetune_jobs": queries.finetune_jobs(rng),
        "pollers": queries.poller_health(),
        "dropped_logs": queries.dropped_logs(),
        "firing_alerts": queries.firing_alerts(),
        "proxy_url": proxy_base_url(request),
        "config": script_config(),
        **runway_context(request),
    }
    return render(request, "dashboard/overview.html", context)
