"""Cost the request logs (and their rollups) that were logged before their model had a price."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from together_dash.traffic.backfill import scheduled_backfill


class Command(BaseCommand):
    help = (
        "Fill in the cost of request logs recorded while their model had no catalog price, and move it "
        "into the usage rollups. Runs the same code as the Celery task, without a broker."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        result = scheduled_backfill()
        if result is None:
            self.stdout.write("backfill_costs: skipped, another run holds the lease")
            return
        self.stdout.write(f"backfill_costs: {result.costed} request logs costed in {result.places} places")
