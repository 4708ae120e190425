"""Snapshot rate limits per key (free probe) and per key and model (proxied responses)."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from together_dash.keys.rate_limits import poll_rate_limits


class Command(BaseCommand):
    help = (
        "Snapshot rate limits per key (free probe) and per key and model (proxied responses). "
        "Runs the same code as the Celery task, without a broker."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(poll_rate_limits().summary())
