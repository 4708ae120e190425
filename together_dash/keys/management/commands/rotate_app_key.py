"""rotate_app_key PREFIX: issue a new secret for an app key and print it, this once."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.keys.lifecycle import KeyActionError, rotate_issued_key
from together_dash.keys.management.commands.add_key import (
    add_actor_arguments,
    add_grace_arguments,
    command_actor,
    grace_of,
)
from together_dash.keys.management.commands.revoke_app_key import app_key_by_prefix


class Command(BaseCommand):
    help = "Rotate an app key by its prefix; the new key is printed once, the old one lasts --grace-minutes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix")
        add_grace_arguments(parser)
        add_actor_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        actor, grace = command_actor(options), grace_of(options)
        app_key = app_key_by_prefix(options["prefix"])
        try:
            plaintext = rotate_issued_key(app_key, actor, grace=grace)
        except KeyActionError as exc:
            raise CommandError(str(exc)) from None
        until = app_key.previous_valid_until
        kept = f" The old key works until {until:%Y-%m-%d %H:%M:%S %Z}." if until else ""
        self.stderr.write(f"Rotated {app_key}. Copy the new key now; it is not shown again.{kept}")
        # Alone on stdout, so `NEW=$(manage.py rotate_app_key ...)` captures just the key.
        self.stdout.write(plaintext)
