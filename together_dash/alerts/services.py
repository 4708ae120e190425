"""Adding, testing and removing alert channels: what the admin and the commands call."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from together_dash.alerts import channels
from together_dash.alerts.delivery import deliver
from together_dash.alerts.kinds import Kind, unknown_kinds
from together_dash.alerts.models import AlertChannel, Notification


def add_channel(
    kind: str, target: str, *, name: str = "", secret: str = "", kinds: Iterable[str] = ()
) -> tuple[AlertChannel, str]:
    """Check and store a channel; returns it and the webhook secret when one was generated (else "")."""
    generated = ""
    if kind == channels.WEBHOOK and not secret:
        generated = secret = secrets.token_urlsafe(32)
    channel = AlertChannel(kind=kind, kinds=sorted(set(kinds)))
    channel.set_target(target)
    channel.set_secret(secret)
    channel.name = name or _free_name(channel)
    channel.full_clean()
    channel.save()
    return channel, generated


def _free_name(channel: AlertChannel) -> str:
    """kind-host (or kind-address), with -2, -3... when taken."""
    target = channel.target
    where = target.split(",")[0].strip() if channel.kind == channels.EMAIL else urlsplit(target).hostname
    base = f"{channel.kind}-{where}"[:90]
    name, n = base, 1
    while AlertChannel.objects.filter(name=name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def parse_kinds(text: str) -> list[str]:
    """ "billing,key_invalid" -> those alert kinds; raises ValidationError naming any unknown one."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = unknown_kinds(kinds)
    if unknown:
        known = ", ".join(Kind.values)
        raise ValidationError(f"Unknown alert kinds: {', '.join(unknown)}. Known kinds: {known}.")
    return kinds


def send_test_message(channel: AlertChannel) -> Notification:
    """Write a test message to the outbox and deliver it now; raises DeliveryError when not taken."""
    if channel.kind == channels.EMAIL:
        message = channels.channel_test_message(channel)
        notification = Notification.objects.create(
            transition=channels.TEST,
            recipients=",".join(sorted(a.lower() for a in channels.clean_addresses(channel.target))),
            subject=f"[together-dash] {message.summary}",
            body_text=f"{message.detail}\n\nAll alerts: {message.url}\n",
        )
    else:
        notification = Notification.for_channel(channel, channels.channel_test_message(channel))
    deliver(notification.pk)
    notification.refresh_from_db()
    return notification


def find_channel(name_or_id: str) -> AlertChannel | None:
    query = AlertChannel.objects.filter(name=name_or_id)
    if name_or_id.isdigit():
        query = query | AlertChannel.objects.filter(pk=int(name_or_id))
    return query.first()
