"""add_key NAME: verify a Together key with GET /models, then store it encrypted.

The secret is read from standard input (hidden when typed at a terminal) or from the environment
variable named by --secret-env, never from the command line, where `ps` and shell history would show it.
Also home of the helpers the other key commands share.
"""
from __future__ import annotations

import getpass
import os
import sys
from datetime import timedelta
from typing import Any, TextIO

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.keys.audit import Actor
from together_dash.keys.lifecycle import KeyActionError, add_upstream_key
from together_dash.keys.models import AuditLog, TogetherKey


def add_secret_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "--secret-env", metavar="VAR", help="read the secret from this environment variable instead of stdin"
    )


def add_actor_arguments(parser: CommandParser) -> None:
    parser.add_argument("--user", metavar="USERNAME", help="the dashboard user to record in the audit log")


def add_grace_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "--grace-minutes", type=int, default=0, metavar="N", help="keep the old secret usable for N minutes"
    )


def read_secret(options: dict[str, Any], prompt: str) -> str:
    """The secret from --secret-env or stdin; never from argv."""
    if options.get("secret_env"):
        value = os.environ.get(options["secret_env"], "").strip()
        if not value:
            raise CommandError(f"The environment variable {options['secret_env']} is unset or empty.")
        return value
    stream: TextIO = options.get("stdin") or sys.stdin
    value = getpass.getpass(prompt) if stream.isatty() else stream.readline()
    if not value.strip():
        raise CommandError("No secret given: pipe it on standard input or use --secret-env VAR.")
    return value.strip()


def command_actor(options: dict[str, Any]) -> Actor:
    """The audit actor of a command: the --user account, if any."""
    user = None
    if options.get("user"):
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"No user named {options['user']!r}.")
    return Actor(user=user, via=AuditLog.Via.COMMAND)


def grace_of(options: dict[str, Any]) -> timedelta | None:
    minutes = options.get("grace_minutes") or 0
    if minutes < 0:
        raise CommandError("--grace-minutes cannot be negative.")
    return timedelta(minutes=minutes) if minutes else None


def upstream_key_named(name: str) -> TogetherKey:
    key = TogetherKey.objects.filter(name=name).first()
    if key is None:
        raise CommandError(f"No upstream key named {name!r}.")
    return key


class Command(BaseCommand):
    help = "Add an upstream Together key; the secret comes from stdin or --secret-env, verified first."
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        add_secret_arguments(parser)
        add_actor_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        actor = command_actor(options)
        secret = read_secret(options, f"Together API key for {options['name']} (input hidden): ")
        try:
            key = add_upstream_key(options["name"], secret, actor)
        except KeyActionError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Added {key}; Together accepted it."))
