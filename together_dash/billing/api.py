"""JSON API of the billing app: GET /api/billing/reconciliation (session or ops token, like the read API)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from ninja import Field, Query, Router, Schema

from together_dash.billing import reconciliation
from together_dash.billing.reconciliation import CAUSES, Reconciliation, ReconciliationError, Row
from together_dash.traffic.api import READ_AUTH, Problem, UtcDatetime, read_responses

router = Router(tags=["billing"])

DEFAULT_SPAN: dict[str, timedelta] = {"hour": timedelta(hours=24), "day": timedelta(days=30)}


class ReconciliationQuery(Schema):
    start: UtcDatetime | None = Field(None, description="Default: end minus 24 h (hour) or 30 days (day).")
    end: UtcDatetime | None = Field(None, description="Default: now.")
    granularity: Literal["hour", "day"] = Field(
        "hour", description="Windows of an hour (ranges up to 31 days) or a UTC day (up to 366 days)."
    )


class BilledOut(Schema):
    cost: Decimal = Field(description="USD: the window's line items as Together reported them.")
    quantity: Decimal = Field(description="Sum of the line items' quantities (tokens, minutes, images...).")
    unit: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int


class ObservedOut(Schema):
    requests: int
    prompt_tokens: int = Field(description="Cached prompt tokens included, as usage counts them.")
    completion_tokens: int
    cost: Decimal = Field(description="USD, requests with a known cost only: see unpriced_requests.")
    unpriced_requests: int


class RowOut(Schema):
    organization_id: str | None = Field(description="null: keys whose organisation is not known yet.")
    start: datetime
    end: datetime
    product: str = Field(description="The catalog model id, or the product name of a charge.")
    model: str
    charge: str = Field(description='"" for a model\'s per-request usage; else dedicated endpoint, '
                        "fine-tuning, batch job or other.")
    resource: dict[str, str]
    billed: BilledOut | None = Field(description="null: the window is not on a fetched report (yet).")
    observed: ObservedOut
    difference: Decimal | None = Field(description="billed.cost - observed.cost, USD.")
    cause: str = Field(description="One of the causes listed, in words, in the answer's `causes`.")


class WindowOut(Schema):
    start: datetime
    end: datetime
    billed_cost: Decimal | None
    observed_cost: Decimal


class OrganizationOut(Schema):
    organization_id: str
    name: str
    last_polled_at: datetime | None
    billed_through: datetime | None = Field(description="The end of the last window on a fetched report.")


class TotalsOut(Schema):
    billed_cost: Decimal
    observed_cost: Decimal
    compared_observed_cost: Decimal = Field(description="Observed in the windows that are billed.")
    difference: Decimal = Field(description="billed_cost - compared_observed_cost.")
    awaiting_bill_cost: Decimal = Field(description="Observed where there is no bill to compare with yet.")
    unpriced_requests: int
    rows_by_cause: dict[str, int]


class ToleranceOut(Schema):
    usd: Decimal
    percent: Decimal


class ReconciliationOut(Schema):
    start: datetime
    end: datetime
    granularity: str
    tolerance: ToleranceOut = Field(description="Match: |difference| <= max(usd, percent of billed).")
    causes: dict[str, str]
    organizations: list[OrganizationOut]
    totals: TotalsOut
    windows: list[WindowOut]
    rows: list[RowOut]


@router.get(
    "/billing/reconciliation",
    auth=READ_AUTH,
    response=read_responses(s200=ReconciliationOut, s400=Problem),
    summary="Billing reconciliation",
)
def get_reconciliation(request: HttpRequest, query: Query[ReconciliationQuery]) -> HttpResponse:
    """What Together billed next to what the proxy and ingest recorded, per window and product, with the
    likely cause of each difference. Windows are whole hours or UTC days; the range is rounded out to them.
    Amounts are decimal strings in USD, exact."""
    end = query.end or timezone.now()
    try:
        start = query.start or end - DEFAULT_SPAN[query.granularity]
    except OverflowError:  # an end in year 1: there is no day before it
        return JsonResponse({"detail": "end is too early: give a start, or a later end."}, status=400)
    try:
        found = reconciliation.reconcile(start, end, query.granularity)
    except (ReconciliationError, OverflowError) as exc:
        detail = str(exc) if isinstance(exc, ReconciliationError) else "The range is out of bounds."
        return JsonResponse({"detail": detail}, status=400)
    # Built here, not validated again against the schema: a month of rows is thousands of objects, and
    # the schema is what these dicts are (tests hold them to each other, the fuzz tests to the document).
    return JsonResponse(reconciliation_payload(found), encoder=AmountEncoder)


class AmountEncoder(DjangoJSONEncoder):
    """Decimals as exact strings without trailing zeros ("0.00088", not "0.000880000000000000")."""

    def default(self, o: Any) -> Any:
        if isinstance(o, Decimal):
            text = format(o.normalize(), "f")
            return "0" if text in ("-0", "0") else text
        return super().default(o)


def reconciliation_payload(found: Reconciliation) -> dict[str, Any]:
    return {
        "start": found.start,
        "end": found.end,
        "granularity": found.granularity,
        "tolerance": {"usd": found.tolerance.usd, "percent": found.tolerance.percent},
        "causes": CAUSES,
        "organizations": [
            {
                "organization_id": org.organization.organization_id,
                "name": org.organization.name,
                "last_polled_at": org.organization.last_polled_at,
                "billed_through": org.billed_through,
            }
            for org in found.organizations
        ],
        "totals": {
            "billed_cost": found.billed_cost,
            "observed_cost": found.observed_cost,
            "compared_observed_cost": found.compared_observed_cost,
            "difference": found.difference,
            "awaiting_bill_cost": found.awaiting_cost,
            "unpriced_requests": found.unpriced_requests,
            "rows_by_cause": found.cause_counts(),
        },
        "windows": [
            {"start": w.start, "end": w.end, "billed_cost": w.billed_cost, "observed_cost": w.observed_cost}
            for w in found.windows
        ],
        "rows": [_row(row, _moment) for row in found.rows],
    }


@lru_cache(maxsize=4096)
def _moment(value: datetime) -> str:
    """A window edge as the encoder writes it ("2026-03-10T09:00:00Z"), once per edge, not once per row."""
    return DjangoJSONEncoder().default(value)


def _row(row: Row, moment: Callable[[datetime], str]) -> dict[str, Any]:
    billed = row.billed
    return {
        "organization_id": row.organization_id,
        "start": moment(row.start),
        "end": moment(row.end),
        "product": row.product,
        "model": row.model,
        "charge": row.charge,
        "resource": row.resource,
        "billed": None if billed is None else {
            "cost": billed.cost, "quantity": billed.quantity, "unit": billed.unit,
            "input_tokens": billed.input_tokens, "cached_input_tokens": billed.cached_input_tokens,
            "output_tokens": billed.output_tokens,
        },
        "observed": {
            "requests": row.observed.requests, "prompt_tokens": row.observed.prompt_tokens,
            "completion_tokens": row.observed.completion_tokens, "cost": row.observed.cost,
            "unpriced_requests": row.observed.unpriced_requests,
        },
        "difference": row.difference,
        "cause": row.cause,
    }
