"""`manage.py validate_dataset FILE [--json] [--model MODEL_ID] [--purpose P]`: exit 0 when accepted."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from together_dash.catalog.services import context_length_for
from together_dash.together.datasets import (
    DEFAULT_MAX_ERRORS,
    FINE_TUNE,
    PURPOSES,
    DatasetIssue,
    DatasetReport,
    validate_dataset,
)


class Command(BaseCommand):
    help = (
        "Check a fine-tune dataset the way Together's upload does and list every problem with its line. "
        "Exit status 0 when the file would be accepted, 1 when not."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--json", action="store_true", dest="as_json", help="print the report as JSON")
        parser.add_argument("--model", default="", help="warn about samples longer than this model's context")
        parser.add_argument("--purpose", choices=PURPOSES, default=FINE_TUNE)
        parser.add_argument(
            "--max-errors", type=int, default=DEFAULT_MAX_ERRORS, help="list at most this many"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        context_length = context_length_for(options["model"])
        report = validate_dataset(
            options["file"],
            purpose=options["purpose"],
            context_length=context_length,
            max_errors=options["max_errors"],
        )
        if options["model"] and context_length is None:
            model = options["model"]
            note = f"Model {model!r} has no context length in the catalog: sample lengths not checked."
            report.warnings.insert(0, DatasetIssue(None, note))
        if options["as_json"]:
            self.stdout.write(json.dumps(report.to_json()))
        else:
            self.stdout.write(describe(options["file"], report))
        if not report.ok:
            raise SystemExit(1)


def describe(path: Path, report: DatasetReport) -> str:
    """The report for people: the verdict, then every error and warning with its line."""
    found = f"{report.format or 'no'} format, {report.samples:,} samples"
    if report.ok:
        lines = [f"{path}: accepted ({found})."]
    else:
        lines = [f"{path}: refused, {report.error_count:,} error(s) ({found})."]
    lines += [f"  {_where(issue)}: {issue.message}" for issue in report.errors]
    lines += [f"  warning, {_where(issue)}: {issue.message}" for issue in report.warnings]
    return "\n".join(lines)


def _where(issue: DatasetIssue) -> str:
    return "file" if issue.line is None else f"line {issue.line}"
