from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from together_dash.alerts.tasks import scheduled_evaluation


class Command(BaseCommand):
    help = "Evaluate every alert rule once (what the evaluate_alerts periodic task does)."

    def handle(self, *args: Any, **options: Any) -> None:
        written = scheduled_evaluation()
        self.stdout.write(f"{written} notification(s) written")
