"""list_alert_channels: every alert channel with its target (masked), kinds and delivery state."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db.models import Count, Max, Q

from together_dash.alerts.models import AlertChannel, Notification


class Command(BaseCommand):
    help = "List the alert channels: name, kind, target (masked), kinds, enabled, pending and last sent."

    def handle(self, *args: Any, **options: Any) -> None:
        rows = AlertChannel.objects.annotate(
            pending=Count("notifications", filter=Q(notifications__status=Notification.Status.PENDING)),
            last_sent=Max("notifications__sent_at"),
        ).order_by("id")
        if not rows:
            self.stdout.write("No alert channels; add one with add_alert_channel.")
        for channel in rows:
            sent = f"{channel.last_sent:%Y-%m-%d %H:%M:%S} UTC" if channel.last_sent else "never"
            self.stdout.write(
                f"{channel.pk}\t{channel.name}\t{channel.kind}\t{channel.target_hint}"
                f"\tsecret {channel.secret_hint or ('set' if channel.secret_encrypted else 'none')}"
                f"\tkinds {','.join(channel.kinds) or 'all'}\t{'enabled' if channel.enabled else 'disabled'}"
                f"\t{channel.pending} pending\tlast sent {sent}"
            )
