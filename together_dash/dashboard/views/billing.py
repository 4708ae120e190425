"""/billing/: what Together billed against what the proxy and ingest recorded, with each difference named."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from together_dash.billing import reconciliation
from together_dash.billing.models import BillingWindow
from together_dash.billing.polling import POLLER
from together_dash.billing.reconciliation import CAUSES, Reconciliation
from together_dash.core.roles import viewer_required
from together_dash.dashboard.palette import BILLED_COLOR, OBSERVED_COLOR
from together_dash.dashboard.views.common import filter_context, range_of, script_config
from together_dash.pollers.models import PollerHeartbeat

GRANULARITIES = {"hour": "Hourly windows", "day": "Daily windows (UTC)"}
# Hour windows up to this span by default, UTC days beyond it.
HOURS_UP_TO = timedelta(days=3)
# The table shows at most this many rows (the API gives them all); filter by cause to see the rest.
ROWS_SHOWN = 500
CHART_PLACES = Decimal("0.000001")


@require_GET
@viewer_required
def billing(request: HttpRequest) -> HttpResponse:
    """Billed and observed totals, a chart of both over time, and the table of windows and products."""
    rng = replace(range_of(request), key_id=None, model=None)  # billing is per organisation, not per key
    granularity, problem = _granularity(request.GET.get("granularity"), rng.span)
    cause = request.GET.get("cause") if request.GET.get("cause") in CAUSES else ""
    found = reconciliation.reconcile(rng.start, rng.end, granularity)
    rows = [row for row in found.rows if not cause or row.cause == cause]
    heartbeat = PollerHeartbeat.objects.filter(name=POLLER).first()
    context = {
        **filter_context(rng),
        "found": found,
        "granularity": granularity,
        "granularities": GRANULARITIES,
        "granularity_problem": problem,
        "cause": cause,
        "causes": CAUSES,
        "rows": rows[:ROWS_SHOWN],
        "rows_hidden": max(0, len(rows) - ROWS_SHOWN),
        "heartbeat": heartbeat,
        "poller_ran": heartbeat is not None and heartbeat.last_finished is not None,
        "has_windows": BillingWindow.objects.exists(),
        "chart": chart_payload(found),
        "config": script_config(),
    }
    return render(request, "dashboard/billing.html", context)


def _granularity(asked: str | None, span: timedelta) -> tuple[str, str]:
    """The window size asked for (or the one that fits the range), and why another was used instead."""
    fitting = "hour" if span <= HOURS_UP_TO else "day"
    if not asked:
        return fitting, ""
    if asked not in GRANULARITIES:
        return fitting, f"Unknown granularity {asked[:20]!r}; showing {GRANULARITIES[fitting].lower()}."
    return asked, ""  # the page's ranges (31 days at most) fit either


def chart_payload(found: Reconciliation) -> dict[str, Any]:
    """Billed and observed cost per window, for the chart (json_script); null where nothing is billed yet."""
    def amount(value: Decimal | None) -> str | None:
        return None if value is None else str(value.quantize(CHART_PLACES))

    return {
        "buckets": [window.start.isoformat() for window in found.windows],
        "bucketSeconds": int(reconciliation.WINDOW[found.granularity].total_seconds()),
        "billed": [amount(window.billed_cost) for window in found.windows],
        "observed": [amount(window.observed_cost) for window in found.windows],
        "billedColor": BILLED_COLOR,
        "observedColor": OBSERVED_COLOR,
    }
