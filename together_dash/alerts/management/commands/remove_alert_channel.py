"""remove_alert_channel NAME_OR_ID: stop sending alerts there; its unsent messages go with it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.alerts.models import Notification
from together_dash.alerts.services import find_channel


class Command(BaseCommand):
    help = "Remove an alert channel (by name or id), with its delivery history and unsent messages."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("channel", help="the channel's name or id (list_alert_channels)")

    def handle(self, *args: Any, **options: Any) -> None:
        channel = find_channel(options["channel"])
        if channel is None:
            raise CommandError(f"No alert channel {options['channel']!r}.")
        unsent = channel.notifications.filter(status=Notification.Status.PENDING).count()
        name = str(channel)
        channel.delete()
        self.stdout.write(self.style.SUCCESS(f"Removed {name}; {unsent} unsent message(s) dropped."))
