"""rotate_key NAME: verify a new secret for an upstream key and switch to it at once."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.keys.lifecycle import KeyActionError, rotate_upstream_key
from together_dash.keys.management.commands.add_key import (
    add_actor_arguments,
    add_grace_arguments,
    add_secret_arguments,
    command_actor,
    grace_of,
    read_secret,
    upstream_key_named,
)


class Command(BaseCommand):
    help = "Rotate an upstream Together key; the new secret comes from stdin or --secret-env, verified first."
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        add_grace_arguments(parser)
        add_secret_arguments(parser)
        add_actor_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        key, actor, grace = upstream_key_named(options["name"]), command_actor(options), grace_of(options)
        secret = read_secret(options, f"New Together API key for {key.name} (input hidden): ")
        try:
            key = rotate_upstream_key(key, secret, actor, grace=grace)
        except KeyActionError as exc:
            raise CommandError(str(exc)) from None
        until = key.previous_valid_until
        kept = f"; the old secret is kept until {until:%Y-%m-%d %H:%M:%S %Z}" if until else ""
        self.stdout.write(self.style.SUCCESS(f"Rotated {key}{kept}. Revoke the old secret at Together too."))
