"""add_budget NAME SCOPE TARGET AMOUNT: a spend budget per UTC day or month, optionally enforced."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.budgets.models import Budget
from together_dash.budgets.services import add_budget


class Command(BaseCommand):
    help = "Add a spend budget: for an app key (name or prefix), an upstream key, a model or a project."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("scope", choices=Budget.Scope.values)
        parser.add_argument(
            "target", help="the app key's name or prefix, the upstream key's name, the model or the project"
        )
        parser.add_argument("amount", help="USD per period, e.g. 25 or 12.50")
        parser.add_argument("--period", choices=Budget.Period.values, default=Budget.Period.MONTH)
        parser.add_argument("--thresholds", default="80,100", help="percentages that alert (default 80,100)")
        parser.add_argument("--enforce", action="store_true",
                            help="app-key budgets: the proxy answers 429 once the amount is spent")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            budget = add_budget(
                options["name"], options["scope"], options["target"], options["amount"],
                period=options["period"], thresholds=options["thresholds"], enforce=options["enforce"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        enforced = ", enforced at the proxy" if budget.enforce else ""
        self.stdout.write(self.style.SUCCESS(
            f"Added budget {budget.name}: {budget.target_label}, ${budget.amount_usd} per {budget.period},"
            f" alerts at {', '.join(f'{t}%' for t in budget.thresholds)}{enforced}."
        ))
