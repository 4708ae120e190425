"""remove_alert_channel NAME_OR_ID: stop sending alerts there; its unsent messages go with it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from together_dash.alerts.management.commands.test_alert_channel import add_channel_argument, channel_named
from together_dash.alerts.models import Notification


class Command(BaseCommand):
    help = "Remove an alert channel (by name or id), with its delivery history and unsent messages."

    def add_arguments(self, parser: CommandParser) -> None:
        add_channel_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        channel = channel_named(options)
        unsent = channel.notifications.filter(status=Notification.Status.PENDING).count()
        name = str(channel)
        channel.delete()
        self.stdout.write(self.style.SUCCESS(f"Removed {name}; {unsent} unsent message(s) dropped."))
