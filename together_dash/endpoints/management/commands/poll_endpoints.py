"""Fetch and store every key's dedicated endpoints (GET /v1/endpoints) and the hardware prices."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from together_dash.endpoints.polling import poll_endpoints


class Command(BaseCommand):
    help = (
        "Fetch every active key's dedicated endpoints (GET /v1/endpoints) and the hardware price list "
        "(GET /v1/hardware), and record each state change. Runs the same code as the Celery task, "
        "without a broker."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(poll_endpoints().summary())
