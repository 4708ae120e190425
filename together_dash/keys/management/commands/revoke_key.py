"""revoke_key NAME: revoke an upstream Together key, at once and for good."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.keys.lifecycle import TOGETHER_KEYS_URL, KeyActionError, revoke_upstream_key
from together_dash.keys.management.commands.add_key import (
    add_actor_arguments,
    command_actor,
    upstream_key_named,
)


class Command(BaseCommand):
    help = "Revoke an upstream Together key: the proxy refuses it at once and the pollers skip it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        add_actor_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        key, actor = upstream_key_named(options["name"]), command_actor(options)
        try:
            revoke_upstream_key(key, actor)
        except KeyActionError as exc:
            raise CommandError(str(exc)) from None
        message = f"Revoked {key}. Revoke it at Together too: {TOGETHER_KEYS_URL}"
        self.stdout.write(self.style.SUCCESS(message))
