"""python manage.py create_app_key NAME: issue an app key for the proxy and print it once."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.keys.lifecycle import KeyActionError
from together_dash.keys.management.commands.add_key import add_actor_arguments, command_actor
from together_dash.keys.services import create_app_key


class Command(BaseCommand):
    help = (
        "Issue an app key for the proxy at /v1/ and print it once (only its prefix and hash are stored). "
        "The key alone goes to stdout, so KEY=$(manage.py create_app_key NAME) works."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="what the key is for, e.g. the service that uses it")
        parser.add_argument("--upstream", metavar="KEYNAME",
                            help="the upstream Together key to use (default: the only active one)")
        parser.add_argument("--expires-in-days", type=int, metavar="N",
                            help="the key stops working after N days")
        parser.add_argument("--models", metavar="m1,m2", default="",
                            help="comma-separated models the key may use (default: all)")
        parser.add_argument("--rate-limit", type=int, metavar="N", help="at most N requests per minute")
        add_actor_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["expires_in_days"]
        if days is not None and days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        actor = command_actor(options)
        try:
            app_key, plaintext = create_app_key(
                options["name"],
                upstream=options["upstream"],
                user=actor.user,
                expires_in=timedelta(days=days) if days else None,
                allowed_models=options["models"].split(","),
                rate_limit_per_minute=options["rate_limit"],
            )
        except KeyActionError as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(f"Created app key {app_key}. It is shown only this once; store it now:")
        # Alone on stdout, so `KEY=$(manage.py create_app_key NAME)` captures just the key.
        self.stdout.write(plaintext)
