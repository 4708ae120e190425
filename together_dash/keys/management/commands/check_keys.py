"""Check every active key's health with GET /models and /whoami (never a billed call)."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from together_dash.keys.health import check_keys


class Command(BaseCommand):
    help = (
        "Check every active key's health with GET /models and /whoami (never a billed call). "
        "Runs the same code as the Celery task, without a broker."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(check_keys().summary())
