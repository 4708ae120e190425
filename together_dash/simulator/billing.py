"""The simulator's own bill: what it served, tallied per (hour, product, resource), and the
`GET /v1/billing/usage` report built from those tallies (together 3.x's `organization.usage.costs`).

Every billed call records its charges here, on the bill of its key's organisation, priced from the
simulator's catalog (prompt tokens served from the prompt cache at the cached-input price), and
running dedicated endpoints are charged per minute from their state history, so a reconciliation of
"what we sent" against "what the bill says" can be tested end to end. Only finished windows are
reported (daily: through the end of yesterday, UTC; hourly: through the last completed hour), as
the real report does; quantities, prices and costs are decimal strings in USD. A key asking for
another organisation's report, or one without billing permission (scenario `billing_denied_keys`),
gets 403.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from together_dash.simulator import errors, pages
from together_dash.simulator.catalog import CatalogModel
from together_dash.simulator.wire import Response, json_response

if TYPE_CHECKING:
    from together_dash.simulator.state import SimulatorState

HOUR = 3600
PER_MILLION = Decimal(1_000_000)
BATCH_DISCOUNT = Decimal("0.5")  # Together bills the batch API at half the serverless price
SERVERLESS = "Serverless Inference"
BATCH = "Batch Inference"
DEDICATED = "Dedicated Endpoints - Hardware Minutes"
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True, slots=True)
class Charge:
    """One billable quantity: `quantity` units of `product` for `resource` at `unit_price` USD."""

    product: str
    resource: dict[str, str]
    quantity: Decimal
    unit_price: Decimal


def token_charges(
    model: CatalogModel,
    prompt_tokens: int,
    completion_tokens: int,
    *,
    cached_tokens: int = 0,
    batch: bool = False,
) -> list[Charge]:
    """Input, cached input and output token lines for a call, at the catalog's per-million prices."""
    product = BATCH if batch else SERVERLESS
    factor = BATCH_DISCOUNT if batch else Decimal(1)
    resource = {"model": model.id}
    cached = min(cached_tokens, prompt_tokens) if model.cached_input_price is not None else 0
    lines = [
        (f"{product} - Input Tokens", prompt_tokens - cached, model.input_price),
        (f"{product} - Cached Input Tokens", cached, model.cached_input_price),
        (f"{product} - Output Tokens", completion_tokens, model.output_price),
    ]
    return [
        Charge(name, resource, Decimal(count), Decimal(str(price)) * factor / PER_MILLION)
        for name, count, price in lines
        if count and price is not None
    ]


def image_charges(model: CatalogModel, images: int) -> list[Charge]:
    return [
        Charge(f"{SERVERLESS} - Images", {"model": model.id}, Decimal(images), Decimal(str(model.base_price)))
    ]


class UsageLedger:
    """Quantities per (hour start, product, resource), with the unit price each was charged at."""

    def __init__(self) -> None:
        self.tallies: dict[tuple[int, str, tuple[tuple[str, str], ...], Decimal], Decimal] = {}

    def record(self, at: float, charges: Iterable[Charge]) -> None:
        hour = int(at // HOUR) * HOUR
        for charge in charges:
            key = (hour, charge.product, tuple(sorted(charge.resource.items())), charge.unit_price)
            self.tallies[key] = self.tallies.get(key, Decimal(0)) + charge.quantity


def endpoint_minutes(state: SimulatorState, organization_id: str, until: float) -> UsageLedger:
    """Per-minute charges of the organisation's dedicated endpoints while STARTED, split at hour marks."""
    ledger = UsageLedger()
    for endpoint in state.endpoints.all_ever():
        if endpoint.organization_id != organization_id:
            continue
        price = Decimal(str(endpoint.cents_per_minute)) / 100
        resource = {"endpoint_id": endpoint.id, "hardware": endpoint.hardware}
        for start, end in endpoint.running_intervals(until):
            for hour_start, seconds in _split_by_hour(start, end):
                minutes = Decimal(seconds) / 60
                ledger.record(hour_start, [Charge(DEDICATED, resource, minutes, price)])
    return ledger


def _split_by_hour(start: float, end: float) -> Iterator[tuple[float, float]]:
    while start < end:
        boundary = (int(start // HOUR) + 1) * HOUR
        piece_end = min(end, boundary)
        yield start, round(piece_end - start, 3)
        start = piece_end


def _month_bounds(month: str) -> tuple[datetime, datetime]:
    match = _MONTH.match(month)
    if not match:
        raise ValueError("month must be YYYY-MM")
    start = datetime(int(match.group(1)), int(match.group(2)), 1, tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def _window_start(hour: int, granularity: str) -> int:
    if granularity == "hour":
        return hour
    return hour - hour % 86400


def _cutoff(now: float, granularity: str) -> int:
    """Windows ending at or before this instant are finished."""
    step = HOUR if granularity == "hour" else 86400
    return int(now // step) * step


def _fmt(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def windows(
    state: SimulatorState, month: str, granularity: str, organization_id: str | None = None
) -> list[dict[str, Any]]:
    """The organisation's finished windows of the month that have usage, oldest first."""
    organization_id = organization_id or state.organization_id
    start, end = _month_bounds(month)
    now = state.clock.now()
    cutoff = min(_cutoff(now, granularity), int(end.timestamp()))
    step = HOUR if granularity == "hour" else 86400
    grouped: dict[int, dict[tuple[str, tuple[tuple[str, str], ...], Decimal], Decimal]] = {}
    ledgers = (state.ledger(organization_id), endpoint_minutes(state, organization_id, now))
    for ledger in ledgers:
        for (hour, product, resource, unit_price), quantity in ledger.tallies.items():
            window = _window_start(hour, granularity)
            if window < start.timestamp() or window + step > cutoff:
                continue
            items = grouped.setdefault(window, {})
            items[(product, resource, unit_price)] = (
                items.get((product, resource, unit_price), Decimal(0)) + quantity
            )
    return [_window(window, step, grouped[window]) for window in sorted(grouped)]


def _window(
    start: int, step: int, items: dict[tuple[str, tuple[tuple[str, str], ...], Decimal], Decimal]
) -> dict[str, Any]:
    line_items = [
        {
            "product_name": product,
            "quantity": _fmt(quantity),
            "unit_price": _fmt(unit_price),
            "cost": _fmt(quantity * unit_price),
            "pricing_dimensions": {key: value for key, value in resource if key in ("model", "hardware")},
            "attributes": dict(resource),
            "applied_credit": {"type": "PREPAID"},
        }
        for (product, resource, unit_price), quantity in sorted(items.items())
    ]
    return {
        "date": datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d"),
        "start_time": _iso(start),
        "end_time": _iso(start + step),
        "line_items": line_items,
    }


async def usage(state: SimulatorState, request: Any) -> Response:
    """GET /v1/billing/usage: a month of finished windows, cursor-paginated; 403 for another org."""
    query = request.query()
    own = state.organization_of(request.key)
    org = query.get("organization_id")
    if org and org != own:
        return Response(403, errors.permission_denied(f"The API key has no access to organization {org}"))
    if request.key in state.scenario.billing_denied_keys:
        return Response(403, errors.permission_denied("The API key has no permission to read billing usage"))
    month = query.get("month") or datetime.fromtimestamp(state.clock.now(), UTC).strftime("%Y-%m")
    granularity = query.get("granularity") or "day"
    if granularity not in ("day", "hour"):
        return Response(400, errors.invalid_request("granularity must be day or hour", param="granularity"))
    try:
        found = windows(state, month, granularity, own)
        data, next_cursor = pages.page(
            found, query, scope=f"{month}|{granularity}", max_limit=state.scenario.billing_page_size
        )
    except ValueError as exc:
        return Response(400, errors.invalid_request(str(exc)))
    return json_response(
        {
            "object": "list",
            "organization_id": own,
            "billing_period": month,
            "currency": "USD",
            "data": data,
            "earliest_window_start": found[0]["start_time"] if found else None,
            "latest_window_end": found[-1]["end_time"] if found else None,
            "next_cursor": next_cursor,
        }
    )
