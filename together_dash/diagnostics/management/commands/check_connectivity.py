"""Check DNS, TLS and the Together API with every active key; the exit code tells scripts the outcome."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.diagnostics.connectivity import (
    DEFAULT_TIMEOUT,
    check_connectivity,
    format_report,
    keys_to_check,
)


class Command(BaseCommand):
    help = (
        "DNS, TLS and GET /models (with latency and status), whoami and rate-limit headers for every active "
        "key, with a verdict per key (ok, auth_failed, unreachable, degraded). Exit status: 0 every key ok, "
        "1 some key failed, 2 Together unreachable with every key."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--key", help="check only the key with this name")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per probe")

    def handle(self, *args: Any, **options: Any) -> None:
        keys = keys_to_check(options["key"])
        if options["key"] and not keys:
            raise CommandError(f"No Together key named {options['key']!r}.")
        report = check_connectivity(keys, timeout=options["timeout"])
        self.stdout.write(
            json.dumps(report.to_dict(), indent=2) if options["json"] else format_report(report)
        )
        if report.exit_code:
            raise SystemExit(report.exit_code)
