"""rotate_encryption_key: re-encrypt every stored secret under the newest FIELD_ENCRYPTION_KEYS entry.

Procedure: put a new Fernet key first in FIELD_ENCRYPTION_KEYS (keep the old one after it), restart,
run this command, then drop the old key from the list.
"""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.keys.lifecycle import KeyActionError, rotate_encryption_key
from together_dash.keys.management.commands.add_key import add_actor_arguments, command_actor


class Command(BaseCommand):
    help = "Re-encrypt every stored secret (Together keys, alert channels) under the newest encryption key."

    def add_arguments(self, parser: CommandParser) -> None:
        add_actor_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            moved = rotate_encryption_key(command_actor(options))
        except KeyActionError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(
            f"Re-encrypted {moved} row(s) (Together keys, alert channels). Older FIELD_ENCRYPTION_KEYS "
            "entries can now be removed."
        ))
