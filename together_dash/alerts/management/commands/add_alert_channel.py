"""add_alert_channel KIND TARGET: another place alerts go (email addresses, Slack, signed webhook, PagerDuty).

A secret given as --secret S lands in shell history and `ps`; --secret - reads it from standard input
and --secret-env VAR from the environment. A Slack URL is itself a secret: give TARGET as - (standard
input) or use --target-env VAR.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.alerts import channels
from together_dash.alerts.management.commands.test_alert_channel import send_test
from together_dash.alerts.models import AlertChannel
from together_dash.alerts.services import add_channel, parse_kinds
from together_dash.keys.management.commands.add_key import read_secret

STDIN = "-"


class Command(BaseCommand):
    help = "Add an alert channel: email ADDRESSES, slack URL, webhook URL, or pagerduty [EVENTS_URL]."
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=AlertChannel.Kind.values)
        parser.add_argument(
            "target",
            nargs="?",
            default="",
            help="addresses (email), the URL (slack, webhook), the Events API URL (pagerduty: optional); "
            "- reads it from standard input",
        )
        parser.add_argument("--target-env", metavar="VAR", help="read TARGET from this environment variable")
        parser.add_argument(
            "--secret",
            metavar="S",
            help="webhook: HMAC secret (generated and shown once when left out); pagerduty: routing key; "
            "- reads it from standard input",
        )
        parser.add_argument(
            "--secret-env", metavar="VAR", help="read the secret from this environment variable"
        )
        parser.add_argument(
            "--kinds", default="", help="alert kinds sent here, comma separated (default: all)"
        )
        parser.add_argument("--name", default="", help="a name for the channel (default: KIND-HOST)")
        parser.add_argument("--test", action="store_true", help="send a test message once it is added")

    def handle(self, *args: Any, **options: Any) -> None:
        kind = options["kind"]
        target = self._target(options)
        secret = self._secret(options)
        try:
            kinds = parse_kinds(options["kinds"])
            channel, generated = add_channel(kind, target, name=options["name"], secret=secret, kinds=kinds)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        hears = ", ".join(channel.kinds) or "every kind"
        self.stdout.write(self.style.SUCCESS(f"Added {channel}: {channel.target_hint} ({hears})."))
        if generated:
            self.stdout.write(
                f"Webhook secret, shown once (the receiver verifies signatures with it): {generated}"
            )
        if options["test"]:
            self._test(channel)

    def _target(self, options: dict[str, Any]) -> str:
        if options["target_env"]:
            return read_secret({"secret_env": options["target_env"]}, "")
        if options["target"] == STDIN:
            return read_secret({"stdin": options.get("stdin")}, "Target (input hidden): ")
        if options["kind"] == channels.SLACK and options["target"]:
            self.stderr.write(
                "Note: a Slack webhook URL is a secret; give it as - or --target-env next time."
            )
        return options["target"]

    def _secret(self, options: dict[str, Any]) -> str:
        if options["secret_env"]:
            return read_secret({"secret_env": options["secret_env"]}, "")
        if options["secret"] == STDIN:
            if options["target"] == STDIN:
                raise CommandError("TARGET and --secret cannot both come from standard input.")
            return read_secret({"stdin": options.get("stdin")}, "Secret (input hidden): ")
        if options["secret"]:
            self.stderr.write(
                "Note: --secret S shows in shell history and ps; prefer --secret - or --secret-env."
            )
        return options["secret"] or ""

    def _test(self, channel: AlertChannel) -> None:
        send_test(channel, "Added, but the test message was not delivered")
        self.stdout.write(self.style.SUCCESS("Test message delivered."))
