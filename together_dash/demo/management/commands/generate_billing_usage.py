"""python manage.py generate_billing_usage: bill the generated traffic's finished hours, as Together would."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.demo.billing_usage import generate_billing_usage


class Command(BaseCommand):
    help = (
        "Store the billing usage report Together would send for the traffic in the usage rollups: the keys "
        "split between N organisations, every finished hour billed by the simulator's biller (run it after "
        "generate_request_logs). Running it again stores nothing new."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--organizations", type=int, default=1, help="organisations to split the keys between (default 1)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not 1 <= options["organizations"] <= 100:
            raise CommandError("--organizations must be between 1 and 100.")
        result = generate_billing_usage(options["organizations"])
        self.stdout.write(
            f"Billed {result.windows:,} hourly windows ({result.line_items:,} line items) "
            f"for {result.organizations} organisation(s)."
        )
