"""list_budgets: every budget with its spend in the current period."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from together_dash.budgets.models import format_usd
from together_dash.budgets.spend import budget_statuses


class Command(BaseCommand):
    help = "List the budgets: name, what they cover, spend so far, share, period reset and enforcement."

    def handle(self, *args: Any, **options: Any) -> None:
        statuses = budget_statuses()
        if not statuses:
            self.stdout.write("No budgets; add one with add_budget.")
        for s in statuses:
            budget, spend = s.budget, s.spend
            at_least = "at least " if spend.is_lower_bound else ""
            unpriced = f" ({spend.unpriced_requests} unpriced requests)" if spend.is_lower_bound else ""
            self.stdout.write(
                f"{budget.pk}\t{budget.name}\t{budget.target_label}\t{budget.period}"
                f"\t{at_least}${format_usd(spend.cost_usd)} of ${format_usd(budget.amount_usd)}"
                f" ({s.percent}%){unpriced}\tresets {s.resets_at:%Y-%m-%d %H:%M} UTC"
                f"\t{'enforced' if budget.enforce else 'not enforced'}"
            )
