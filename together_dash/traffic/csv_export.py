"""CSV export of request logs, streamed: rows are read in keyset chunks and written as they come."""
from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from decimal import Decimal
from itertools import islice

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse
from django.utils import timezone

from together_dash.core.spreadsheet import defused
from together_dash.traffic import listing

COLUMNS: tuple[str, ...] = (
    "id", "created_at", "source", "app_key_id", "upstream_key_id", "key_fingerprint", "client_id", "method",
    "endpoint", "model", "model_served", "stream", "status", "latency_ms", "ttft_ms", "prompt_tokens",
    "completion_tokens", "total_tokens", "cached_tokens", "cost_usd", "request_id", "ratelimit_remaining",
    "tokenlimit_remaining", "category", "kind", "error_message", "error_group_id",
)
LINES_PER_AWAIT = 500


class _Echo:
    """A file-like object whose write() hands the line back, so csv.writer can feed a generator."""

    def write(self, value: str) -> str:
        return value


def csv_lines(span: listing.Window, filters: listing.RequestFilters) -> Iterator[str]:
    """The header line, then one line per matching log, newest first."""
    writer = csv.writer(_Echo())
    yield writer.writerow(COLUMNS)
    for log in listing.iterate(span, filters):
        fields = listing.log_fields(log)
        yield writer.writerow([_cell(fields[column]) for column in COLUMNS])


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float | Decimal):
        return str(value)
    return defused(str(value))



def streaming_response(
    span: listing.Window, filters: listing.RequestFilters, asynchronous: bool
) -> StreamingHttpResponse:
    """A CSV download that is written while it is read, under WSGI and ASGI alike."""
    lines = csv_lines(span, filters)
    # Under ASGI Django would turn a plain iterator into a list before sending it: the whole export
    # in memory. An async iterator that pulls a few hundred lines at a time keeps it streaming.
    content = _async_lines(lines) if asynchronous else lines
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="requests-{timezone.now():%Y%m%d-%H%M%S}.csv"'
    return response


async def _async_lines(lines: Iterator[str]) -> AsyncIterator[str]:
    # thread_sensitive: the same thread (and database connection) that ran the view reads the rows.
    take = sync_to_async(lambda: list(islice(lines, LINES_PER_AWAIT)), thread_sensitive=True)
    while chunk := await take():
        for line in chunk:
            yield line
