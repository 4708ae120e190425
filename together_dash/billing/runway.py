"""Credit runway, as far as it can honestly go: the balance an admin entered, what was spent since, and
how long the rest lasts at the last day's burn rate. The one reader behind the overview panel and the API.

Together has no balance API, so the balance is an admin's entry (CreditBalance). Spend is read in spans
that never overlap, so nothing is counted twice:

- billed: the hours Together's own report covers (its windows, each the exact sum of its line items).
  A month fetched at F covers its hours up to the last one finished at F, hours without usage included
  (the report leaves those out); the latest unbroken run of fetched months is used.
- observed: the usage rollups' cost_usd for the rest: the ragged hour of the balance's own date and the
  hours after the last billed one, which Together has not reported yet.

Observed spend counts only what the proxy and the ingest API saw, priced from the catalog; a request
whose model has no price adds nothing, so with unpriced requests spend is a lower bound, and the
balance left and the hours left are upper bounds. Every read is bounded whatever the log volume: one
row per fetched month, one per billed hour, and the rollups through traffic.rollups.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from together_dash.billing.models import (
    BillingMonth,
    BillingWindow,
    CreditBalance,
    Organization,
    OrganizationKey,
)
from together_dash.billing.polling import GRANULARITY, month_bounds
from together_dash.traffic import rollups
from together_dash.traffic.models import ERROR_COLUMNS

BURN_WINDOW = timedelta(hours=24)
HOUR = rollups.HOUR
# Past this a date means nothing; the hours are still given.
RUNS_OUT_SHOWN_UP_TO = timedelta(days=3650)
RATE_PLACES = Decimal("0.00000001")  # the rollups' cost places
HOURS_PLACES = Decimal("0.1")
Span = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose money: one organisation, or the whole account (organization None)."""

    organization: Organization | None
    # Billing of these organisations (pks); rollups of these upstream keys (None: all traffic).
    organization_ids: tuple[int, ...]
    key_ids: tuple[int, ...] | None

    @property
    def label(self) -> str:
        return str(self.organization) if self.organization else "Account-wide"


def account_scope(organizations: Sequence[Organization]) -> Scope:
    return Scope(None, tuple(org.pk for org in organizations), None)


def organization_scope(organization: Organization, organizations: Sequence[Organization]) -> Scope:
    """An organisation's billing and its keys' traffic; all traffic when it is the only one."""
    if len(organizations) == 1:
        return Scope(organization, (organization.pk,), None)
    keys = OrganizationKey.objects.filter(organization=organization).values_list("key_id", flat=True)
    return Scope(organization, (organization.pk,), tuple(sorted(keys)))


# ---- spend ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Spend:
    """Spend over [start, end): billed by Together over billed_span, observed by us for the rest."""

    start: datetime
    end: datetime
    billed_usd: Decimal
    observed_usd: Decimal
    unpriced_requests: int
    billed_span: Span | None

    @property
    def total_usd(self) -> Decimal:
        return self.billed_usd + self.observed_usd

    @property
    def lower_bound(self) -> bool:
        """True when requests with no price are left out: the spend was at least this."""
        return self.unpriced_requests > 0


def billed_coverage(scope: Scope) -> Span | None:
    """The latest unbroken run of hours the scope's billing report covers (every organisation's)."""
    if not scope.organization_ids:
        return None
    fetched: dict[int, list[Span]] = {pk: [] for pk in scope.organization_ids}
    months = BillingMonth.objects.filter(organization_id__in=scope.organization_ids, granularity=GRANULARITY)
    for org_id, month, fetched_at in months.values_list("organization_id", "month", "fetched_at"):
        start, end = month_bounds(month)
        fetched[org_id].append((start, min(end, rollups.floor_to(fetched_at, HOUR))))
    runs = [_latest_run(spans) for spans in fetched.values()]
    if None in runs:
        return None  # an organisation with no report: nothing is billed for the whole scope
    first, last = max(run[0] for run in runs), min(run[1] for run in runs)
    return (first, last) if first < last else None


def _latest_run(spans: list[Span]) -> Span | None:
    run: Span | None = None
    for start, end in sorted(span for span in spans if span[0] < span[1]):
        run = (run[0], max(run[1], end)) if run and start <= run[1] else (start, end)
    return run


def spend(scope: Scope, start: datetime, end: datetime, coverage: Span | None) -> Spend:
    """Billed where the coverage holds whole hours of [start, end), observed before and after."""
    billed_span = _within(coverage, start, end)
    if billed_span is None:
        observed_spans = [(start, end)]
        billed = Decimal(0)
    else:
        observed_spans = [(start, billed_span[0]), (billed_span[1], end)]
        billed = _billed(scope, billed_span)
    cost, unpriced = Decimal(0), 0
    for first, last in observed_spans:
        if first < last:
            sums = _observed(scope, first, last, ("cost_usd", "unpriced_requests"))
            cost, unpriced = cost + sums["cost_usd"], unpriced + sums["unpriced_requests"]
    return Spend(start, end, billed, cost, unpriced, billed_span)


def _within(coverage: Span | None, start: datetime, end: datetime) -> Span | None:
    if coverage is None:
        return None
    first = max(coverage[0], rollups.ceil_to(start, HOUR))
    last = min(coverage[1], rollups.floor_to(end, HOUR))
    return (first, last) if first < last else None


def _billed(scope: Scope, span: Span) -> Decimal:
    # Summed here, not in SQL: SQLite would add the amounts as floats.
    windows = BillingWindow.objects.filter(
        organization_id__in=scope.organization_ids,
        granularity=GRANULARITY,
        start_time__gte=span[0],
        start_time__lt=span[1],
        end_time__lte=span[1],
    )
    return sum(windows.values_list("cost", flat=True), Decimal(0))


def _observed(scope: Scope, start: datetime, end: datetime, columns: tuple[str, ...]) -> dict:
    found = rollups.summed(start, end, columns, key_ids=scope.key_ids).get(None)
    return found or {column: 0 for column in columns}


# ---- runway --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Runway:
    """One scope's balance, its spend since, the last day's burn and what it leaves, all estimates."""

    scope: Scope
    now: datetime
    balance: CreditBalance | None
    since: Spend | None  # spend since the balance's date; None without a balance
    burn: Spend  # the last 24 hours
    billing_errors: int  # requests answered 402 in the last 24 hours, as the rollups counted them

    @property
    def burn_per_hour_usd(self) -> Decimal:
        return (self._rate()).quantize(RATE_PLACES)

    def _rate(self) -> Decimal:
        return self.burn.total_usd / Decimal(BURN_WINDOW // HOUR)

    @property
    def left_usd(self) -> Decimal | None:
        if self.balance is None or self.since is None:
            return None
        return self.balance.balance_usd - self.since.total_usd

    @property
    def exhausted(self) -> bool:
        """The estimated balance is at or below zero."""
        left = self.left_usd
        return left is not None and left <= 0

    @property
    def hours_left(self) -> Decimal | None:
        """Hours the balance left lasts at the last day's rate; None without a balance or a burn."""
        left, rate = self.left_usd, self._rate()
        if left is None or rate <= 0:
            return None
        return (max(left, Decimal(0)) / rate).quantize(HOURS_PLACES)

    @property
    def runs_out_at(self) -> datetime | None:
        hours = self.hours_left
        if hours is None or hours > RUNS_OUT_SHOWN_UP_TO // HOUR:
            return None
        return self.now + timedelta(hours=float(hours))

    @property
    def lower_bound(self) -> bool:
        """Unpriced requests: the spend is at least what is shown, the balance and hours at most."""
        return self.burn.lower_bound or bool(self.since and self.since.lower_bound)


def runway(scope: Scope, balance: CreditBalance | None, now: datetime | None = None) -> Runway:
    now = now or timezone.now()
    coverage = billed_coverage(scope)
    since = spend(scope, min(balance.as_of, now), now, coverage) if balance else None
    burn = spend(scope, now - BURN_WINDOW, now, coverage)
    billing = ERROR_COLUMNS["billing"]
    errors = _observed(scope, now - BURN_WINDOW, now, (billing,))[billing]
    return Runway(scope, now, balance, since, burn, int(errors))


def latest_balance(organization: Organization | None) -> CreditBalance | None:
    """The balance that applies: the latest entered for the organisation (None: account-wide)."""
    return CreditBalance.objects.filter(organization=organization).select_related("organization").first()


def current_runways(now: datetime | None = None) -> list[Runway]:
    """One runway per known organisation once any has a balance, else the account-wide one.

    An account-wide balance (entered before any organisation was known) applies until an organisation
    has one of its own. Organisations are few: those the account's keys belong to.
    """
    organizations = list(Organization.objects.order_by("name", "organization_id"))
    balances = {org.pk: latest_balance(org) for org in organizations}
    if not any(balances.values()):
        return [runway(account_scope(organizations), latest_balance(None), now)]
    return [runway(organization_scope(org, organizations), balances[org.pk], now) for org in organizations]
