"""Fetch and store each organisation's billing usage (GET /v1/billing/usage), this month and the last."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from together_dash.billing.polling import poll_billing


class Command(BaseCommand):
    help = (
        "Fetch each organisation's billing usage (GET /v1/billing/usage) for the current and the previous "
        "month and store its finished windows. Runs the same code as the Celery task, without a broker."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(poll_billing().summary())
