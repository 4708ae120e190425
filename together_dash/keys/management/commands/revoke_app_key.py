"""revoke_app_key PREFIX: revoke an app key at once, grace window included."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.keys.lifecycle import KeyActionError, revoke_issued_key
from together_dash.keys.management.commands.add_key import add_actor_arguments, command_actor
from together_dash.keys.models import AppKey


def app_key_by_prefix(given: str) -> AppKey:
    """The app key for a prefix given as 'abcd1234', 'tdk_abcd1234' or 'tdk_abcd1234_…'."""
    parts = given.split("_")
    prefix = parts[1] if len(parts) >= 2 and parts[0] == AppKey.KIND else given
    app_key = AppKey.objects.filter(prefix=prefix).first()
    if app_key is None:
        raise CommandError(f"No app key with prefix {prefix!r}.")
    return app_key


class Command(BaseCommand):
    help = "Revoke an app key by its prefix (tdk_<prefix>_…)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix")
        add_actor_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        app_key, actor = app_key_by_prefix(options["prefix"]), command_actor(options)
        try:
            revoke_issued_key(app_key, actor)
        except KeyActionError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Revoked {app_key}."))
