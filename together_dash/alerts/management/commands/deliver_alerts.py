from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from together_dash.alerts.delivery import DeliveryError, scheduled_redelivery


class Command(BaseCommand):
    help = "Send the pending alert emails and channel messages now (what redeliver_pending does)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            sent = scheduled_redelivery()
        except DeliveryError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{sent} notification(s) sent")
