"""expire_key_grace: destroy old secrets whose grace window has ended (run it from beat or cron)."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from together_dash.keys.lifecycle import expire_grace_windows


class Command(BaseCommand):
    help = "Destroy old key secrets whose rotation grace window has ended."

    def handle(self, *args: Any, **options: Any) -> None:
        wiped = expire_grace_windows()
        self.stdout.write(f"Destroyed {wiped} expired old secret(s).")
