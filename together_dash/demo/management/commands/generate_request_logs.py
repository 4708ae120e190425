"""python manage.py generate_request_logs --count N: load N realistic request logs (COPY on PostgreSQL)."""

from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.demo.generator import generate_request_logs

PROGRESS_EVERY = 1_000_000  # rows between progress lines on stderr


class Command(BaseCommand):
    help = (
        "Load N realistic request logs over the last D days (daily and weekly shape, several upstream keys, "
        "the catalog's models, errors across the taxonomy), with their error groups and usage rollups."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, required=True, help="how many request logs to load")
        parser.add_argument("--days", type=int, default=30, help="spread over the last D days (default 30)")
        parser.add_argument(
            "--keys", type=int, default=5, help="upstream keys, created if missing (default 5)"
        )
        parser.add_argument(
            "--seed", type=int, default=1, help="the same seed gives the same traffic (default 1)"
        )
        parser.add_argument(
            "--truncate", action="store_true", help="first delete every request log, error group and rollup"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        count, days, keys = options["count"], options["days"], options["keys"]
        if count < 0 or days < 1 or not 1 <= keys <= 100:
            raise CommandError("--count must be >= 0, --days >= 1 and --keys between 1 and 100.")
        started, self.next_report = time.perf_counter(), PROGRESS_EVERY
        result = generate_request_logs(
            count,
            days=days,
            keys=keys,
            seed=options["seed"],
            truncate=options["truncate"],
            progress=lambda loaded: self._progress(loaded, count, started),
        )
        self.stdout.write(
            f"Loaded {result.rows:,} request logs over {days} days in {result.seconds:.1f} s "
            f"({result.rows_per_second:,.0f} rows/s, {result.method}); {result.error_groups} error groups."
        )

    def _progress(self, loaded: int, count: int, started: float) -> None:
        # Progress goes to stderr, so scripts can still read the summary line alone on stdout.
        if loaded < self.next_report or loaded >= count:
            return
        self.next_report = (loaded // PROGRESS_EVERY + 1) * PROGRESS_EVERY
        elapsed = time.perf_counter() - started
        print(f"  {loaded:,} / {count:,} rows, {loaded / elapsed:,.0f} rows/s", file=sys.stderr, flush=True)
