"""set_credit_balance AMOUNT: record the prepaid balance Together's billing page shows (it has no API)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from together_dash.billing.balances import BalanceError, enter_balance, parse_amount
from together_dash.billing.models import Organization
from together_dash.keys.management.commands.add_key import add_actor_arguments, command_actor


class Command(BaseCommand):
    help = (
        "Record the prepaid credit balance (USD) and when it was true; the overview's runway counts spend "
        "from then on. Every entry is kept and audited; the latest one applies."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("amount", help="the balance in US dollars, e.g. 1234.56")
        parser.add_argument(
            "--as-of", metavar="WHEN",
            help="when it was true: ISO 8601 (2026-03-10T09:30, 2026-03-10T09:30Z or a date); default now. "
            "Without an offset, in the dashboard's TIME_ZONE.",
        )
        parser.add_argument(
            "--organization", metavar="ORG_ID",
            help="the Together organisation id (required when the account has several)",
        )
        add_actor_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        actor = command_actor(options)
        try:
            amount = parse_amount(options["amount"])
            as_of = _as_of(options["as_of"]) if options["as_of"] else timezone.now()
            balance = enter_balance(amount, as_of, actor, _organization(options["organization"]))
        except BalanceError as exc:
            raise CommandError(str(exc)) from None
        scope = balance.organization or "the account (no organisation known yet)"
        self.stdout.write(self.style.SUCCESS(
            f"Recorded ${balance.balance_usd:,.2f} as of {balance.as_of.isoformat(timespec='minutes')} "
            f"for {scope}."
        ))


def _as_of(text: str) -> datetime:
    try:
        moment = parse_datetime(text)
        day = None if moment else parse_date(text)
    except ValueError:
        moment = day = None
    if day is not None:
        moment = datetime(day.year, day.month, day.day)
    if moment is None:
        raise CommandError(f"--as-of {text[:40]!r} is not an ISO 8601 date or time, e.g. 2026-03-10T09:30.")
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def _organization(organization_id: str | None) -> Organization | None:
    if not organization_id:
        return None
    found = Organization.objects.filter(organization_id=organization_id).first()
    if found is None:
        known = ", ".join(Organization.objects.values_list("organization_id", flat=True)) or "none yet"
        raise CommandError(f"No organisation {organization_id!r} is known (known: {known}).")
    return found
