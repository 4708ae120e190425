"""Small JSON endpoints behind the charts, at /dashboard/charts/<name>.json.

All take the range, key and model query parameters of the pages, read rollups, snapshots and jobs
(never raw request logs), and answer 401/403 as JSON to scripts that lost their session.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from together_dash.dashboard import queries
from together_dash.dashboard.access import viewer_required_json
from together_dash.dashboard.palette import (
    CATEGORY_COLORS,
    CATEGORY_LABELS,
    ERRORS_COLOR,
    FINETUNE_STATUS_COLORS,
    HEADROOM_COLORS,
    OTHER_STATUS_COLOR,
    REQUESTS_COLOR,
    TREND_COLORS,
)
from together_dash.dashboard.ranges import Range, parse_range

ChartView = Callable[[HttpRequest, Range], dict[str, Any]]


def chart_endpoint(build: ChartView) -> Callable[[HttpRequest], HttpResponse]:
    """A GET-only, uncached, viewer-only JSON view of what build() returns for the request's range."""

    @require_GET
    @never_cache
    @viewer_required_json
    @wraps(build)
    def view(request: HttpRequest) -> HttpResponse:
        rng = parse_range(request.GET)
        if rng.problem:
            return JsonResponse({"detail": rng.problem}, status=400)
        return JsonResponse({"range": rng.params(), **build(request, rng)})

    return view


def _timeline_fields(line: queries.Timeline) -> dict[str, Any]:
    return {
        "step": "minute" if line.step == queries.MINUTE else "hour",
        "bucketSeconds": int(line.size.total_seconds()),
        "buckets": [_iso(bucket) for bucket in line.buckets()],
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat()


@chart_endpoint
def categories(request: HttpRequest, rng: Range) -> dict[str, Any]:
    """Errors per category over time, for a stacked bar chart."""
    series = queries.category_series(rng)
    datasets = [
        {
            "category": category,
            "label": CATEGORY_LABELS[category],
            "color": CATEGORY_COLORS[category],
            "data": values,
        }
        for category, values in series.values.items()
    ]
    totals = {category: sum(values) for category, values in series.values.items()}
    return {
        **_timeline_fields(series.timeline),
        "datasets": datasets,
        "totals": totals,
        "total": sum(totals.values()),
    }


@chart_endpoint
def volume(request: HttpRequest, rng: Range) -> dict[str, Any]:
    """Requests and errors over time."""
    series = queries.volume_series(rng)
    datasets = [
        {"name": "requests", "label": "Requests", "color": REQUESTS_COLOR, "data": series.values["requests"]},
        {"name": "errors", "label": "Errors", "color": ERRORS_COLOR, "data": series.values["errors"]},
    ]
    return {
        **_timeline_fields(series.timeline),
        "datasets": datasets,
        "total": sum(series.values["requests"]),
    }


@chart_endpoint
def quota(request: HttpRequest, rng: Range) -> dict[str, Any]:
    """The latest headroom per key and model (bars) and the tightest ones over time (lines)."""
    bars = queries.latest_headroom(rng)
    trend_pairs = [(bar.key_id, bar.model) for bar in bars[: queries.QUOTA_TREND_SERIES]]
    line, trend = queries.headroom_trend(rng, trend_pairs)
    labels = {(bar.key_id, bar.model): bar.short_label for bar in bars}
    datasets = [
        {"label": labels[pair], "color": TREND_COLORS[index % len(TREND_COLORS)], "data": values}
        for index, (pair, values) in enumerate(trend.items())
    ]
    warnings = [_warning(bar) for bar in bars if bar.level != "ok"]
    return {
        "bars": [_bar(bar) for bar in bars],
        "trend": {**_timeline_fields(line), "datasets": datasets},
        "warnings": warnings,
    }


def _bar(headroom: queries.Headroom) -> dict[str, Any]:
    return {
        "keyId": headroom.key_id,
        "key": headroom.key_name,
        "model": headroom.model,
        "label": headroom.label,
        "shortLabel": headroom.short_label,
        "headroomPct": round(headroom.headroom_pct, 1),
        "level": headroom.level,
        "color": HEADROOM_COLORS[headroom.level],
        "takenAt": _iso(headroom.taken_at),
        "requestRemaining": headroom.request_remaining,
        "requestLimit": headroom.request_limit,
        "tokenRemaining": headroom.token_remaining,
        "tokenLimit": headroom.token_limit,
    }


def _warning(headroom: queries.Headroom) -> str:
    return f"{headroom.label}: {headroom.headroom_pct:.0f}% of the rate limit left ({headroom.level})."


@chart_endpoint
def finetunes(request: HttpRequest, rng: Range) -> dict[str, Any]:
    """Fine-tune jobs by status: the running ones and those that changed within the range."""
    counts = queries.finetune_status_counts(rng)
    return {
        "statuses": [status for status, _ in counts],
        "counts": [number for _, number in counts],
        "colors": [FINETUNE_STATUS_COLORS.get(status, OTHER_STATUS_COLOR) for status, _ in counts],
        "total": sum(number for _, number in counts),
    }
