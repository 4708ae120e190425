"""Poll the model catalog (GET /models) with every active key and record what changed."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from together_dash.catalog.polling import poll_models


class Command(BaseCommand):
    help = (
        "Poll the model catalog (GET /models) with every active key and record what changed. "
        "Runs the same code as the Celery task, without a broker."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(poll_models().summary())
