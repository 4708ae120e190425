"""Poll fine-tune jobs and their events with every active key."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from together_dash.jobs.fine_tunes import poll_fine_tunes


class Command(BaseCommand):
    help = (
        "Poll fine-tune jobs and their events with every active key. "
        "Runs the same code as the Celery task, without a broker."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(poll_fine_tunes().summary())
