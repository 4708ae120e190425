"""Check a request before sending it: exact model id, and prompt + max_tokens <= context length."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.diagnostics.preflight import PreflightInputError, PreflightResult, check


class Command(BaseCommand):
    help = (
        "Check a model id and a prompt (or chat messages) against the polled catalog: the model must exist "
        "exactly, and prompt tokens + max_tokens must fit its context length. Exit status 1 when it would "
        "fail."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", required=True, help="exact Together model id")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--prompt", help="a text prompt")
        source.add_argument(
            "--messages-file", help="JSON file: a list of {role, content} messages ('-' for stdin)"
        )
        parser.add_argument("--max-tokens", type=int, required=True, help="max_tokens of the request")
        parser.add_argument("--json", action="store_true", help="print the result as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        messages = _read_messages(options["messages_file"]) if options["messages_file"] else None
        try:
            result = check(
                options["model"], options["max_tokens"], messages=messages, prompt=options["prompt"]
            )
        except PreflightInputError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps(result.to_dict(), indent=2) if options["json"] else _text(result))
        if not result.ok:
            raise SystemExit(1)


def _read_messages(name: str) -> Any:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        return json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CommandError(f"Cannot read messages from {name}: {exc}") from None


def _text(result: PreflightResult) -> str:
    lines = [f"{'OK' if result.ok else 'FAIL'}  {result.model}"]
    if result.context_length is not None:
        lines.append(f"  context length  {result.context_length}")
    lines.append(f"  prompt tokens   {result.prompt_tokens} ({result.tokenizer})")
    lines.append(f"  + max_tokens    {result.max_tokens} = {result.total_tokens}")
    lines += [f"  problem: {problem}" for problem in result.problems]
    if result.successor:
        lines.append(f"  successor: {result.successor}")
    if result.close_matches:
        lines.append(f"  close matches: {', '.join(result.close_matches)}")
    return "\n".join(lines)
