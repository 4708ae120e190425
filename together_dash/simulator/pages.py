"""Cursor pagination the way together 3.x reads it: `{data, next_cursor}`, the next page via `after`.

A cursor is opaque to clients; here it is the offset of the next item, base64-encoded, so a bad
cursor is a 400 rather than a silent first page.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from together_dash.simulator import errors
from together_dash.simulator.wire import Response, json_response

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def encode_cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The cursor's text; raises ValueError when it is not one of ours."""
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}") from exc


def limit_of(query: dict[str, str], default: int = DEFAULT_LIMIT) -> int:
    """The `limit` parameter, 1..MAX_LIMIT; raises ValueError otherwise."""
    raw = query.get("limit")
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer between 1 and {MAX_LIMIT}")
    return int(raw)


def offset_of(query: dict[str, str], scope: str = "") -> int:
    """Where the page starts: 0, or the offset in an `after` cursor issued for `scope`."""
    after = query.get("after")
    if not after:
        return 0
    issued_for, _, offset = decode_cursor(after).rpartition("|")
    if issued_for != scope or not offset.isdigit():
        raise ValueError(f"cursor {after!r} does not belong to this listing")
    return int(offset)


def page(
    items: list[Any], query: dict[str, str], scope: str = "", max_limit: int | None = None
) -> tuple[list[Any], str | None]:
    """One page of `items` and the next page's cursor (None on the last), at most `max_limit` long."""
    start = offset_of(query, scope)
    limit = limit_of(query)
    end = start + (min(limit, max_limit) if max_limit else limit)
    return items[start:end], encode_cursor(f"{scope}|{end}") if end < len(items) else None


def cursor_page(items: list[Any], query: dict[str, str], **extra: Any) -> Response:
    """A 3.x list answer: `{object: "list", data, next_cursor}`; a bad limit or cursor is a 400."""
    try:
        data, next_cursor = page(items, query)
    except ValueError as exc:
        return Response(400, errors.invalid_request(str(exc)))
    return json_response({"object": "list", "data": data, "next_cursor": next_cursor, **extra})
