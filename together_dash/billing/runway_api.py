"""JSON API of the credit runway: GET /api/billing/runway (session or ops token, like the read API).

The same estimate as the overview's runway panel, from billing.runway; amounts are decimal USD.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Router, Schema

from together_dash.billing.runway import BURN_WINDOW, HOUR, Runway, Spend, current_runways
from together_dash.traffic.api import READ_AUTH, read_responses

router = Router(tags=["billing"])


class BalanceOut(Schema):
    balance_usd: Decimal
    as_of: datetime
    entered_at: datetime
    entered_by: str = Field(description="Username; empty when entered by a command without --user.")
    via: str


class SpendOut(Schema):
    start: datetime
    end: datetime
    billed_usd: Decimal = Field(description="From Together's billing report, over billed_from to billed_to.")
    observed_usd: Decimal = Field(description="From the usage rollups, for the rest of the span.")
    total_usd: Decimal
    billed_from: datetime | None
    billed_to: datetime | None
    unpriced_requests: int = Field(description="Observed requests whose model has no price: not counted.")
    lower_bound: bool = Field(description="True when unpriced requests make total_usd a lower bound.")


class RunwayOut(Schema):
    scope: Literal["account", "organization"]
    organization_id: str | None
    organization_name: str | None
    estimate: bool = Field(True, description="Always true: Together has no balance API.")
    balance: BalanceOut | None = Field(description="The balance entered that applies; null: burn rate only.")
    spend_since_balance: SpendOut | None
    estimated_balance_usd: Decimal | None
    exhausted: bool = Field(description="The estimated balance is at or below zero (Together answers 402).")
    burn_window_hours: int
    burn: SpendOut
    burn_per_hour_usd: Decimal
    hours_left: Decimal | None = Field(description="At the burn rate; null without a balance or spend.")
    runs_out_at: datetime | None
    lower_bound: bool = Field(
        description="Unpriced requests: spend is at least this, balance left and hours left at most."
    )
    billing_errors_24h: int = Field(description="Requests answered 402 in the last 24 hours.")


class RunwaysOut(Schema):
    generated_at: datetime
    runways: list[RunwayOut]


@router.get(
    "/billing/runway", auth=READ_AUTH, response=read_responses(s200=RunwaysOut),
    summary="Credit runway (an estimate)",
)
def get_runway(request: HttpRequest) -> dict[str, Any]:
    """Per organisation (or account-wide): the balance entered, spend since, burn rate and hours left."""
    now = timezone.now()
    return {"generated_at": now, "runways": [_runway(found) for found in current_runways(now)]}


def _runway(found: Runway) -> dict[str, Any]:
    org, balance = found.scope.organization, found.balance
    return {
        "scope": "organization" if org else "account",
        "organization_id": org.organization_id if org else None,
        "organization_name": org.name if org else None,
        "balance": balance and {
            "balance_usd": balance.balance_usd, "as_of": balance.as_of, "entered_at": balance.entered_at,
            "entered_by": balance.entered_by_name, "via": balance.via,
        },
        "spend_since_balance": found.since and _spend(found.since),
        "estimated_balance_usd": found.left_usd,
        "exhausted": found.exhausted,
        "burn_window_hours": BURN_WINDOW // HOUR,
        "burn": _spend(found.burn),
        "burn_per_hour_usd": found.burn_per_hour_usd,
        "hours_left": found.hours_left,
        "runs_out_at": found.runs_out_at,
        "lower_bound": found.lower_bound,
        "billing_errors_24h": found.billing_errors,
    }


def _spend(spend: Spend) -> dict[str, Any]:
    billed_from, billed_to = spend.billed_span or (None, None)
    return {
        "start": spend.start, "end": spend.end, "billed_usd": spend.billed_usd,
        "observed_usd": spend.observed_usd, "total_usd": spend.total_usd, "billed_from": billed_from,
        "billed_to": billed_to, "unpriced_requests": spend.unpriced_requests,
        "lower_bound": spend.lower_bound,
    }
