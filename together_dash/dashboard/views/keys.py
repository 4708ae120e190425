"""Usage, quota and errors per upstream key. Key actions live on the key admin pages (/keys/)."""

from __future__ import annotations

from dataclasses import replace

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from together_dash.core.roles import viewer_required
from together_dash.dashboard import queries
from together_dash.dashboard.views.common import figure_cards, filter_context, range_of, script_config
from together_dash.keys.models import TogetherKey

KEY_HEADROOM_ROWS = 30


@require_GET
@viewer_required
def key_list(request: HttpRequest) -> HttpResponse:
    """Every upstream key: health, tightest headroom, traffic and errors over the range."""
    rng = range_of(request)
    context = {**filter_context(rng), "rows": queries.key_usage(rng)}
    return render(request, "dashboard/keys.html", context)


@require_GET
@viewer_required
def key_detail(request: HttpRequest, key_id: int) -> HttpResponse:
    """One key: health, headroom per model, usage against the previous period, and its top errors."""
    key = get_object_or_404(TogetherKey, pk=key_id)
    rng = replace(range_of(request), key_id=key.id)
    context = {
        **filter_context(rng),
        "key": key,
        "cards": figure_cards(queries.compared_figures(rng)),
        "headroom": queries.latest_headroom(rng, limit=KEY_HEADROOM_ROWS),
        "top_groups": queries.top_error_groups(rng),
        "config": script_config(),
    }
    return render(request, "dashboard/key_detail.html", context)
