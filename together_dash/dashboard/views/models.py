"""The model catalog with our traffic per model, successors for removed models, and recent changes."""

from __future__ import annotations

from dataclasses import replace

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from together_dash.catalog.models import ModelInfo
from together_dash.core.roles import viewer_required
from together_dash.dashboard import queries
from together_dash.dashboard.views.common import filter_context, range_of


@require_GET
@viewer_required
def model_list(request: HttpRequest) -> HttpResponse:
    """Every catalog model (filterable by state and type), busiest first over the range."""
    rng = range_of(request)
    state = request.GET.get("state")
    state = state if state in ModelInfo.State.values else None
    types = queries.model_types()
    model_type = request.GET.get("type")
    model_type = model_type if model_type in types else None
    traffic = queries.figures_by(replace(rng, model=None), "model")
    context = {
        **filter_context(rng),
        "rows": queries.catalog_rows(traffic, state, model_type),
        "uncatalogued": queries.uncatalogued_traffic(traffic),
        "changes": queries.recent_model_changes(),
        "states": ModelInfo.State.values,
        "types": types,
        "state": state,
        "model_type": model_type,
    }
    return render(request, "dashboard/models.html", context)
