"""Poll batch jobs with every active key; read the files of the finished ones."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from together_dash.jobs.batches import poll_batches


class Command(BaseCommand):
    help = (
        "Poll batch jobs with every active key and read the files of finished ones (failures, remainder). "
        "Runs the same code as the Celery task, without a broker: files are read here, not in a worker."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(poll_batches().summary())
