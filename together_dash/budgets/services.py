"""Creating and finding budgets: what the commands call (the page goes through BudgetForm)."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError

from together_dash.budgets.models import Budget
from together_dash.keys.models import AppKey, TogetherKey


def add_budget(
    name: str, scope: str, target: str, amount: str, *, period: str = Budget.Period.MONTH,
    thresholds: str = "80, 100", enforce: bool = False,
) -> Budget:
    """Check and store a budget; target names the app key (name or prefix), upstream key, model or project."""
    try:
        amount_usd = Decimal(amount.strip().removeprefix("$"))
    except InvalidOperation:
        message = f"{amount!r} is not an amount in USD (e.g. 25 or 12.50)."
        raise ValidationError({"amount_usd": message}) from None
    budget = Budget(name=name, scope=scope, period=period, amount_usd=amount_usd, thresholds=thresholds,
                    enforce=enforce)
    _set_target(budget, target)
    budget.full_clean()
    budget.save()
    return budget


def _set_target(budget: Budget, target: str) -> None:
    if budget.scope == Budget.Scope.APP_KEY:
        budget.app_key = _one(AppKey.objects.filter(name=target) | AppKey.objects.filter(prefix=target),
                              f"app key {target!r}")
    elif budget.scope == Budget.Scope.UPSTREAM_KEY:
        budget.upstream_key = _one(TogetherKey.objects.filter(name=target), f"upstream key {target!r}")
    elif budget.scope == Budget.Scope.MODEL:
        budget.model = target
    else:
        budget.project = target


def _one(rows, what: str):  # noqa: ANN001, ANN202 (a queryset and its model)
    found = list(rows[:2])
    if len(found) != 1:
        raise ValidationError(f"No single {what}: {'several match' if found else 'none matches'}.")
    return found[0]


def find_budget(name_or_id: str) -> Budget | None:
    rows = Budget.objects.filter(name=name_or_id)
    if name_or_id.isdigit():
        rows = rows | Budget.objects.filter(pk=int(name_or_id))
    return rows.first()
