"""Write the redacted debug bundle (a zip) to attach to a bug report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from together_dash.diagnostics.bundle import build_bundle, bundle_filename


class Command(BaseCommand):
    help = (
        "Write a zip with versions, a settings summary, connectivity results, key health (last four "
        "characters only), rate-limit snapshots, error groups, sample request logs, poller heartbeats and a "
        "catalog summary. Every secret is redacted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-o", "--output", help="zip file to write (default: together-dash-debug-<time>.zip)"
        )
        parser.add_argument(
            "--include-bodies", action="store_true", help="include stored error message text of request logs"
        )
        parser.add_argument(
            "--skip-connectivity", action="store_true", help="do not call Together while building the bundle"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        data = build_bundle(
            include_bodies=options["include_bodies"], with_connectivity=not options["skip_connectivity"]
        )
        target = Path(options["output"] or bundle_filename())
        target.write_bytes(data)
        self.stdout.write(f"Debug bundle written to {target} ({len(data)} bytes).")
