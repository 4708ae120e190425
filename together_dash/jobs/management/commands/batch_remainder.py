"""Write the requests of a batch that have no successful output, as JSONL ready to resubmit."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.jobs.batches import batch_remainder
from together_dash.jobs.models import BatchJob
from together_dash.together.client import TogetherAPIError


class Command(BaseCommand):
    help = (
        "Write the input lines of a batch whose custom_id has no successful output (e.g. after a 402 stopped "
        "it), read from Together now, as JSONL to resubmit. The batch must have been polled (poll_batches)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("batch_id", help="the Together batch id")
        parser.add_argument("-o", "--output", default="-", help="file to write (default: standard output)")

    def handle(self, *args: Any, **options: Any) -> None:
        batch_id, output = options["batch_id"], options["output"]
        if not BatchJob.objects.filter(batch_id=batch_id).exists():
            raise CommandError(f"Unknown batch {batch_id!r}: run poll_batches first.")
        try:
            count = self._write(batch_id, output)
        except TogetherAPIError as exc:
            raise CommandError(f"Reading the batch files failed: {exc.kind}: {exc}") from None
        where = "standard output" if output == "-" else output
        self.stderr.write(f"{count} request(s) without output written to {where}.")

    def _write(self, batch_id: str, output: str) -> int:
        if output == "-":
            return _write_lines(batch_id, lambda line: self.stdout.write(line))
        with open(output, "w", encoding="utf-8") as out:
            return _write_lines(batch_id, lambda line: out.write(line + "\n"))


def _write_lines(batch_id: str, write: Callable[[str], object]) -> int:
    count = 0
    for line in batch_remainder(batch_id):
        write(line)
        count += 1
    return count
