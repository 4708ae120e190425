"""test_alert_channel NAME_OR_ID: send a test message through the outbox now and say whether it arrived.

Also home of what the other channel commands share: naming a channel on the command line.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.alerts.delivery import DeliveryError
from together_dash.alerts.models import AlertChannel
from together_dash.alerts.services import find_channel, send_test_message


def add_channel_argument(parser: CommandParser) -> None:
    parser.add_argument("channel", help="the channel's name or id (list_alert_channels)")


def channel_named(options: dict[str, Any]) -> AlertChannel:
    channel = find_channel(options["channel"])
    if channel is None:
        raise CommandError(f"No alert channel {options['channel']!r}.")
    return channel


def send_test(channel: AlertChannel, failure: str) -> None:
    """send_test_message(), its failure as a CommandError starting with `failure`."""
    try:
        send_test_message(channel)
    except DeliveryError as exc:
        raise CommandError(f"{failure}: {exc}") from None


class Command(BaseCommand):
    help = "Send a test message to an alert channel (by name or id)."

    def add_arguments(self, parser: CommandParser) -> None:
        add_channel_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        channel = channel_named(options)
        send_test(channel, "Not delivered")
        self.stdout.write(self.style.SUCCESS(f"Test message delivered to {channel}."))
