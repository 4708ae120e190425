"""python manage.py create_api_token NAME: issue an ops token for the JSON API and print it once."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from together_dash.keys.audit import Actor, record
from together_dash.keys.models import ApiToken, AuditLog


class Command(BaseCommand):
    help = (
        "Issue an ops token for the read API (Authorization: Bearer tdo_...) and print it once; only "
        "its prefix and hash are stored. The token alone goes to stdout, so TOKEN=$(...) works."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="who or what uses the token, e.g. grafana")
        parser.add_argument("--expires-in-days", type=int, metavar="N",
                            help="the token stops working after N days")

    def handle(self, *args: Any, **options: Any) -> None:
        name, days = options["name"].strip(), options["expires_in_days"]
        if not name:
            raise CommandError("The token needs a name.")
        if days is not None and days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        token = ApiToken(name=name, expires_at=timezone.now() + timedelta(days=days) if days else None)
        with transaction.atomic():
            plaintext = token.issue()
            token.save()
            actor = Actor(via=AuditLog.Via.COMMAND)
            record(AuditLog.Action.CREATE, AuditLog.Outcome.SUCCESS, actor, key=token)
        self.stderr.write(f"Created API token {token}. It is shown only this once; store it now:")
        self.stdout.write(plaintext)
