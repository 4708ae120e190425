"""python manage.py prune_request_logs: delete request logs and minute rollups past their retention."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.traffic import retention


class Command(BaseCommand):
    help = (
        "Delete request logs older than REQUEST_LOG_RETENTION_DAYS and minute rollups older than "
        "ROLLUP_MINUTE_RETENTION_DAYS, in batches (the periodic task runs the same code)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=retention.BATCH_SIZE,
                            help=f"rows deleted per transaction (default {retention.BATCH_SIZE})")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        result = retention.scheduled_prune(batch_size=options["batch_size"])
        if result is None:
            raise CommandError("Another prune is running (it holds the lease); try again later.")
        self.stdout.write(
            f"Deleted {result.request_logs} request logs before {result.logs_before:%Y-%m-%d %H:%M} "
            f"and {result.minute_rollups} minute rollups before {result.minutes_before:%Y-%m-%d %H:%M}."
        )
