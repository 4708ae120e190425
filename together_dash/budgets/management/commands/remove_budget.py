"""remove_budget NAME_OR_ID: stop watching (and enforcing) a budget; its past alerts stay."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.budgets.services import find_budget


class Command(BaseCommand):
    help = "Remove a budget (by name or id); an enforced one stops refusing its app key within seconds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("budget", help="the budget's name or id")

    def handle(self, *args: Any, **options: Any) -> None:
        budget = find_budget(options["budget"])
        if budget is None:
            raise CommandError(f"No budget named {options['budget']!r}; list_budgets shows them.")
        name = budget.name
        budget.delete()
        self.stdout.write(self.style.SUCCESS(f"Removed budget {name}."))
