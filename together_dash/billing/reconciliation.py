"""What Together billed next to what the proxy and the ingest API recorded, per window and product, and
the likely cause of each difference: the one reader behind GET /api/billing/reconciliation and /billing/.

Billed: the stored line items of each organisation's report (hourly windows), or for day windows their
UTC-day sums per model or charge (BillingDay, kept by the poller). Observed: the usage rollups
(UsageHour or UsageDay, never the request logs) of the upstream keys linked to that organisation
(OrganizationKey, from whoami).

A line item names its model in `pricing_dimensions.model` (else `attributes.model`), the catalog's model
id, which is the rollups' model column; its token type is the end of its product name ("Serverless
Inference - Input Tokens", "... - Cached Input Tokens", "... - Output Tokens"). A model's lines of one
window form one row next to that model's observed tokens and cost. A line with no request behind it
(dedicated endpoint minutes, fine-tuning, batch jobs) is a row of its own.

Each row gets one cause from CAUSES, picked in a fixed order (`cause_of`).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from django.conf import settings
from django.db.models import Sum, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce

from together_dash.billing.models import (
    BillingDay,
    BillingLineItem,
    BillingMonth,
    Organization,
    OrganizationKey,
)
from together_dash.billing.polling import GRANULARITY, TOKEN_FIELDS, month_bounds
from together_dash.billing.products import Product, product_named, unit_of
from together_dash.traffic import rollups

Granularity = Literal["hour", "day"]
WINDOW: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
# 744 hourly windows (a long month), or a year of days.
MAX_SPAN: dict[str, timedelta] = {"hour": timedelta(days=31), "day": timedelta(days=366)}
ZERO = Decimal(0)

# The fixed vocabulary of causes, in the order they are tried (README: "Billing reconciliation").
CAUSES: dict[str, str] = {
    "unlinked_key": "Traffic on upstream keys whose organisation is not known yet (the billing poller links "
    "each key through its whoami), so there is no bill to set it against.",
    "not_fetched": "The billing poller has not fetched this month: it fetches the current and the previous "
    "month, so older windows are from before it first ran.",
    "not_billed_yet": "Together has not reported this window yet: it reports finished windows only, and the "
    "billing poller fetches them hourly.",
    "not_per_request": "A charge with no request behind it (dedicated endpoint minutes, fine-tuning, batch "
    "jobs): there is nothing in the request logs to set it against.",
    "matched": "Billed and observed agree within the tolerance.",
    "unpriced_model": "The catalog has no price for this model, so the dashboard could not cost some of its "
    "requests (shown as unpriced, never as $0).",
    "bypassed": "Together billed more tokens than the dashboard recorded: traffic reached Together without "
    "going through the proxy or the ingest API.",
    "observed_not_billed": "The dashboard recorded more tokens than Together billed, e.g. requests to a "
    "dedicated endpoint (billed by the minute) or to a model Together bills under another id.",
    "cached_input_pricing": "The same tokens at a different cost: Together billed cached input tokens at "
    "its cached-input price, which the catalog does not have or has differently.",
    "price_mismatch": "The same tokens at a different cost: the catalog's price is not the unit price "
    "Together billed.",
}

# ---- rows ---------------------------------------------------------------------------------------------

@dataclass(slots=True)
class Billed:
    cost: Decimal = ZERO
    quantity: Decimal = ZERO
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    unit: str = ""

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.output_tokens


@dataclass(slots=True)
class Observed:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = ZERO
    unpriced_requests: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Row:
    """One window and product of one organisation (None: keys with no known organisation)."""

    organization_id: str | None
    start: datetime
    end: datetime
    product: str  # the model id, or the charge's product name
    model: str
    charge: str  # "" for a model's per-request usage
    resource: dict[str, str]
    billed: Billed | None  # None: the window is not on a fetched report (yet)
    observed: Observed = field(default_factory=Observed)
    cause: str = ""

    @property
    def difference(self) -> Decimal | None:
        """Billed minus observed, in USD; None while the window is not billed."""
        return None if self.billed is None else self.billed.cost - self.observed.cost

    @property
    def cause_text(self) -> str:
        return CAUSES[self.cause]


@dataclass(frozen=True, slots=True)
class Tolerance:
    """A difference within max(usd, percent of the billed cost) is a match."""

    usd: Decimal
    percent: Decimal

    @classmethod
    def from_settings(cls) -> Tolerance:
        return cls(settings.BILLING_RECONCILE_TOLERANCE_USD, settings.BILLING_RECONCILE_TOLERANCE_PERCENT)

    def allows(self, billed: Decimal, difference: Decimal) -> bool:
        return abs(difference) <= max(self.usd, abs(billed) * self.percent / 100)


def cause_of(row: Row, tolerance: Tolerance) -> str:
    """The likely cause of a row's difference, tried in CAUSES' order."""
    if row.organization_id is None:
        return "unlinked_key"
    if row.billed is None:
        return row.cause or "not_billed_yet"  # set by the coverage: not_fetched or not_billed_yet
    if row.charge:
        return "not_per_request"
    billed, observed = row.billed, row.observed
    if tolerance.allows(billed.cost, billed.cost - observed.cost):
        return "matched"
    if observed.unpriced_requests or (observed.tokens and not observed.cost):
        return "unpriced_model"  # (an embedding has no completion count: unpriced without being counted)
    if billed.tokens > observed.tokens:
        return "bypassed"
    if billed.tokens < observed.tokens:
        return "observed_not_billed"
    return "cached_input_pricing" if billed.cached_input_tokens else "price_mismatch"


# ---- what the reports cover ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OrganizationCoverage:
    """One organisation, and up to when each fetched month's report was complete."""

    organization: Organization
    # month (YYYY-MM) -> the end of its last finished hourly window when it was fetched
    months: dict[str, datetime]
    # (start, end) -> status: every product of a window asks for the same one
    _statuses: dict[tuple[datetime, datetime], str] = field(default_factory=dict, compare=False, repr=False)
    # Read once: a model instance's pk is a property, slow enough to show in a loop over thousands of rows.
    pk: int = field(init=False, compare=False)
    organization_id: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pk", self.organization.pk)
        object.__setattr__(self, "organization_id", self.organization.organization_id)

    def status(self, start: datetime, end: datetime) -> str:
        """"billed" when the window is on a fetched report, else not_fetched or not_billed_yet."""
        found = self._statuses.get((start, end))
        if found is None:
            found = self._statuses[start, end] = self._status(start, end)
        return found

    def _status(self, start: datetime, end: datetime) -> str:
        month = f"{start:%Y-%m}"
        fetched_through = self.months.get(month)
        if fetched_through is None:
            latest = max(self.months.values(), default=None)
            return "not_billed_yet" if latest is None or start >= latest else "not_fetched"
        return "billed" if end <= fetched_through else "not_billed_yet"

    @property
    def billed_through(self) -> datetime | None:
        return max(self.months.values(), default=None)


def coverage() -> dict[int, OrganizationCoverage]:
    """Every organisation by its pk, with the months its reports cover."""
    found = {org.pk: OrganizationCoverage(org, {}) for org in Organization.objects.all()}
    for month in BillingMonth.objects.filter(granularity=GRANULARITY):
        # A report fetched at T holds every hourly window that finished by T (and none of a later month).
        through = min(rollups.floor_to(month.fetched_at, WINDOW["hour"]), month_bounds(month.month)[1])
        found[month.organization_id].months[month.month] = through
    return found


# ---- the reconciliation -------------------------------------------------------------------------------

@dataclass(slots=True)
class WindowTotals:
    start: datetime
    end: datetime
    billed_cost: Decimal | None  # None: no organisation's report has this window yet
    observed_cost: Decimal = ZERO


@dataclass(slots=True)
class Reconciliation:
    start: datetime
    end: datetime
    granularity: str
    tolerance: Tolerance
    organizations: list[OrganizationCoverage]
    rows: list[Row]
    windows: list[WindowTotals]

    @property
    def billed_cost(self) -> Decimal:
        return sum((row.billed.cost for row in self.rows if row.billed), ZERO)

    @property
    def observed_cost(self) -> Decimal:
        return sum((row.observed.cost for row in self.rows), ZERO)

    @property
    def compared_observed_cost(self) -> Decimal:
        """What was observed in the windows that are billed: the part the billed cost is set against."""
        return sum((row.observed.cost for row in self.rows if row.billed), ZERO)

    @property
    def difference(self) -> Decimal:
        return self.billed_cost - self.compared_observed_cost

    @property
    def awaiting_cost(self) -> Decimal:
        """Observed cost with no bill to set it against yet (or ever: unlinked keys)."""
        return sum((row.observed.cost for row in self.rows if not row.billed), ZERO)

    @property
    def unpriced_requests(self) -> int:
        return sum(row.observed.unpriced_requests for row in self.rows)

    def cause_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(CAUSES, 0)
        for row in self.rows:
            counts[row.cause] += 1
        return {cause: n for cause, n in counts.items() if n}


class ReconciliationError(ValueError):
    """A range or granularity that cannot be reconciled; the message says why."""


def check_range(start: datetime, end: datetime, granularity: str) -> tuple[datetime, datetime]:
    """The range rounded out to whole windows, or ReconciliationError saying what is wrong with it."""
    if granularity not in WINDOW:
        raise ReconciliationError(f"granularity must be hour or day, not {granularity[:20]!r}.")
    if start >= end:
        raise ReconciliationError("start must be before end.")
    if end - start > MAX_SPAN[granularity]:
        days = MAX_SPAN[granularity].days
        raise ReconciliationError(f"With {granularity} windows the range may span at most {days} days.")
    return rollups.align(start, end, WINDOW[granularity])


def reconcile(
    start: datetime, end: datetime, granularity: str, tolerance: Tolerance | None = None
) -> Reconciliation:
    """Billed against observed in each window of [start, end) (rounded out to whole windows)."""
    first, last = check_range(start, end, granularity)
    tolerance = tolerance or Tolerance.from_settings()
    orgs = coverage()
    links = dict(OrganizationKey.objects.values_list("key_id", "organization_id"))
    rows: dict[tuple, Row] = {}
    if granularity == "day":
        for day in _billed_days(first, last):
            _add_billed_day(rows, orgs, day)
    else:
        for item in _billed_hours(first, last):
            _add_billed_hour(rows, orgs, item)
    for sums in rollups.window_sums(first, last, granularity, OBSERVED_COLUMNS, key_groups=links):
        _add_observed(rows, orgs, sums, granularity)
    for row in rows.values():
        row.cause = cause_of(row, tolerance)
    ordered = sorted(rows.values(), key=_row_order)
    return Reconciliation(
        first, last, granularity, tolerance, sorted(orgs.values(), key=lambda c: str(c.organization)),
        ordered, _window_totals(first, last, granularity, ordered, orgs),
    )


OBSERVED_COLUMNS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "unpriced_requests")


def _billed_days(first: datetime, last: datetime) -> Iterable[tuple]:
    """The day summaries the poller keeps (BillingDay): a row per model or charge, as shown."""
    days = BillingDay.objects.filter(day__gte=first, day__lt=last)
    return days.values_list(
        "organization_id", "day", "model", "product_name", "resource", "input_tokens", "cached_input_tokens",
        "output_tokens", "quantity", "unit", "cost",
    )


def _billed_hours(first: datetime, last: datetime) -> Iterable[dict]:
    """Line items summed per organisation, hour, product, dimensions and attributes, in the database."""
    # The model as text, the rest of the JSON as text too: only a charge's resource is ever parsed.
    named = {
        "line_model": Coalesce(
            KeyTextTransform("model", "pricing_dimensions"), KeyTextTransform("model", "attributes")
        ),
        "dimensions_text": Cast("pricing_dimensions", TextField()),
        "attributes_text": Cast("attributes", TextField()),
    }
    items = BillingLineItem.objects.filter(start_time__gte=first, start_time__lt=last)
    return (
        items.annotate(**named)
        .values("organization_id", "start_time", "product_name", *named)
        .annotate(quantity=Sum("quantity"), cost=Sum("cost"))
        .order_by()
    )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _add_billed_day(rows: dict[tuple, Row], orgs: dict[int, OrganizationCoverage], day: tuple) -> None:
    org_pk, start, model, name, resource, inputs, cached, outputs, quantity, unit, cost = day
    start = _utc(start)
    end, org = start + WINDOW["day"], orgs[org_pk]
    if name:
        row = _charge_row(rows, org, start, end, name, product_named(name, model), resource or {})
    else:
        row = _model_row(rows, org, start, end, model)
    if row.billed is None:
        return  # a day whose first hours are billed is not a finished day window: its row waits
    billed = row.billed
    billed.cost += cost
    billed.quantity += quantity
    billed.input_tokens += int(inputs)
    billed.cached_input_tokens += int(cached)
    billed.output_tokens += int(outputs)
    billed.unit = unit


def _add_billed_hour(rows: dict[tuple, Row], orgs: dict[int, OrganizationCoverage], item: dict) -> None:
    start = _utc(item["start_time"])
    end, org = start + WINDOW["hour"], orgs[item["organization_id"]]
    name = item["product_name"]
    product = product_named(name, item["line_model"] or "")
    if product.charge:
        parts = (json.loads(item["dimensions_text"] or "{}"), json.loads(item["attributes_text"] or "{}"))
        resource = {str(k): str(v) for part in parts if isinstance(part, dict) for k, v in part.items()}
        row = _charge_row(rows, org, start, end, name, product, resource)
    else:
        row = _model_row(rows, org, start, end, product.model)
    if row.billed is None:
        return
    quantity = Decimal(item["quantity"] or 0)
    row.billed.cost += Decimal(item["cost"] or 0)
    row.billed.quantity += quantity
    if product.token_type:
        field_name = TOKEN_FIELDS[product.token_type]
        setattr(row.billed, field_name, getattr(row.billed, field_name) + int(quantity))
    row.billed.unit = "tokens" if product.token_type else unit_of(name)


def _charge_row(
    rows: dict[tuple, Row], org: OrganizationCoverage, start: datetime, end: datetime, name: str,
    product: Product, resource: dict[str, str],
) -> Row:
    key = (org.pk, start, "charge", name, tuple(sorted(resource.items())))
    row = rows.get(key)
    if row is None:
        status = org.status(start, end)
        row = rows[key] = Row(
            org.organization_id, start, end, name, product.model, product.charge, resource,
            Billed() if status == "billed" else None, cause="" if status == "billed" else status,
        )
    return row


def _model_row(
    rows: dict[tuple, Row], org: OrganizationCoverage | None, start: datetime, end: datetime, model: str
) -> Row:
    key = (org.pk if org else None, start, "model", model)
    row = rows.get(key)
    if row is None:
        status = org.status(start, end) if org else "unlinked_key"
        billed = Billed() if status == "billed" else None
        row = rows[key] = Row(
            org.organization_id if org else None, start, end, model, model, "", {}, billed,
            cause="" if status in ("billed", "unlinked_key") else status,
        )
    return row


def _add_observed(
    rows: dict[tuple, Row],
    orgs: dict[int, OrganizationCoverage],
    sums: dict,
    granularity: str,
) -> None:
    if not (sums["prompt_tokens"] or sums["completion_tokens"] or sums["cost_usd"]):
        return  # requests that failed before any token was counted: Together bills none of them
    start = _utc(sums["bucket"])
    org = orgs.get(sums["group"]) if sums["group"] is not None else None  # the keys' organisation
    row = _model_row(rows, org, start, start + WINDOW[granularity], sums["model"])
    row.observed.requests += sums["requests"]
    row.observed.prompt_tokens += sums["prompt_tokens"]
    row.observed.completion_tokens += sums["completion_tokens"]
    row.observed.cost += Decimal(sums["cost_usd"])
    row.observed.unpriced_requests += sums["unpriced_requests"]


def _row_order(row: Row) -> tuple:
    return (row.start, row.organization_id is None, row.organization_id or "", bool(row.charge), row.product)


def _window_totals(
    first: datetime, last: datetime, granularity: str, rows: list[Row], orgs: dict[int, OrganizationCoverage]
) -> list[WindowTotals]:
    """Every window of the range, empty ones too: billed is None where no organisation is billed yet."""
    size = WINDOW[granularity]
    count = (last - first) // size
    windows = [WindowTotals(first + size * i, first + size * (i + 1), None) for i in range(count)]
    for window in windows:
        if any(org.status(window.start, window.end) == "billed" for org in orgs.values()):
            window.billed_cost = ZERO
    by_start = {window.start: window for window in windows}
    for row in rows:
        window = by_start[row.start]
        window.observed_cost += row.observed.cost
        if row.billed is not None:
            window.billed_cost = (window.billed_cost or ZERO) + row.billed.cost
    return windows
