"""What a budget has spent in its period: the one reader behind the page, the alerts and the proxy.

Spend comes from what the proxy and the ingest API recorded, through the rollups, never a scan of the
request log: upstream-key, model and project budgets sum the day rollups of the period (at most 31 rows
per key and model), app-key budgets the app keys' hour rollups (at most 744 rows). Requests whose model
had no price are counted apart: while there are any, the spend is a lower bound, never a $0.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Sum
from django.utils import timezone

from together_dash.budgets.models import Budget
from together_dash.keys.models import TogetherKey
from together_dash.traffic.models import AppKeySpendHour
from together_dash.traffic.rollups import summed

SPEND_COLUMNS = ("requests", "cost_usd", "unpriced_requests")
_PERCENT_PLACES = Decimal("0.1")


@dataclass(frozen=True, slots=True)
class Spend:
    """Cost recorded over a span, the requests it counts and those with no price (left out of cost)."""

    cost_usd: Decimal = Decimal(0)
    requests: int = 0
    unpriced_requests: int = 0

    @property
    def is_lower_bound(self) -> bool:
        """Some requests had no price: the real spend is at least cost_usd, maybe more."""
        return self.unpriced_requests > 0


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget in its current period: spend so far, share of the amount, thresholds reached."""

    budget: Budget
    period_start: datetime
    resets_at: datetime
    spend: Spend

    @property
    def percent(self) -> Decimal:
        share = self.spend.cost_usd * 100 / self.budget.amount_usd
        return share.quantize(_PERCENT_PLACES, rounding=ROUND_HALF_UP)

    @property
    def bar_value(self) -> Decimal:
        """The percentage a progress bar shows (a bar stops at full)."""
        return min(self.percent, Decimal(100))

    @property
    def is_over(self) -> bool:
        return self.spend.cost_usd >= self.budget.amount_usd

    @property
    def reached(self) -> list[int]:
        """The thresholds (percent) the spend has reached, lowest first."""
        return [t for t in self.budget.thresholds if self.spend.cost_usd * 100 >= self.budget.amount_usd * t]

    @property
    def period_key(self) -> str:
        """The period as a short stable name: 2026-12 or 2026-12-04."""
        pattern = "%Y-%m-%d" if self.budget.period == Budget.Period.DAY else "%Y-%m"
        return self.period_start.strftime(pattern)


def app_key_spend(app_key_id: int, start: datetime, end: datetime) -> Spend:
    """An app key's spend over whole hours [start, end), from its hour rollups."""
    rows = AppKeySpendHour.objects.filter(app_key_id=app_key_id, bucket__gte=start, bucket__lt=end)
    sums = rows.aggregate(**{column: Sum(column) for column in SPEND_COLUMNS})
    return Spend(
        Decimal(sums["cost_usd"] or 0), int(sums["requests"] or 0), int(sums["unpriced_requests"] or 0)
    )


def _from_sums(sums: dict | None) -> Spend:
    if not sums:
        return Spend()
    return Spend(Decimal(sums["cost_usd"]), int(sums["requests"]), int(sums["unpriced_requests"]))


def budget_spend(budget: Budget, start: datetime, end: datetime) -> Spend:
    """The spend of the budget's scope over [start, end) (a period: whole UTC days)."""
    if budget.scope == Budget.Scope.APP_KEY:
        return app_key_spend(budget.app_key_id, start, end)
    if budget.scope == Budget.Scope.UPSTREAM_KEY:
        return _from_sums(summed(start, end, SPEND_COLUMNS, key_id=budget.upstream_key_id).get(None))
    if budget.scope == Budget.Scope.MODEL:
        return _from_sums(summed(start, end, SPEND_COLUMNS, model=budget.model).get(None))
    keys = set(TogetherKey.objects.filter(project_name=budget.project).values_list("pk", flat=True))
    per_key = summed(start, end, SPEND_COLUMNS, by="upstream_key")
    return _added(_from_sums(sums) for key_id, sums in per_key.items() if key_id in keys)


def _added(spends: Iterable[Spend]) -> Spend:
    total = Spend()
    for spend in spends:
        total = Spend(
            total.cost_usd + spend.cost_usd,
            total.requests + spend.requests,
            total.unpriced_requests + spend.unpriced_requests,
        )
    return total


def budget_status(budget: Budget, now: datetime | None = None) -> BudgetStatus:
    start, resets_at = budget.period_bounds(now or timezone.now())
    return BudgetStatus(budget, start, resets_at, budget_spend(budget, start, resets_at))


def budget_statuses(now: datetime | None = None) -> list[BudgetStatus]:
    """Every budget in its current period, in name order."""
    now = now or timezone.now()
    budgets = Budget.objects.select_related("app_key", "upstream_key")
    return [budget_status(budget, now) for budget in budgets]
