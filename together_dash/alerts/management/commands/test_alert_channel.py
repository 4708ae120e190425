"""test_alert_channel NAME_OR_ID: send a test message through the outbox now and say whether it arrived."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.alerts.delivery import DeliveryError
from together_dash.alerts.services import find_channel, send_test_message


class Command(BaseCommand):
    help = "Send a test message to an alert channel (by name or id)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("channel", help="the channel's name or id (list_alert_channels)")

    def handle(self, *args: Any, **options: Any) -> None:
        channel = find_channel(options["channel"])
        if channel is None:
            raise CommandError(f"No alert channel {options['channel']!r}.")
        try:
            send_test_message(channel)
        except DeliveryError as exc:
            raise CommandError(f"Not delivered: {exc}") from None
        self.stdout.write(self.style.SUCCESS(f"Test message delivered to {channel}."))
