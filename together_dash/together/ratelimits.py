"""Parse Together's rate-limit and retry headers into one typed, always-safe object."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

# Header name -> RateLimitInfo field. Every header is optional (ref §4.1: current docs say only a 429
# is guaranteed to carry x-ratelimit-reset), so each field defaults to None.
_NUMERIC_HEADERS = {
    "x-ratelimit-limit": "request_limit",
    "x-ratelimit-remaining": "request_remaining",
    "x-ratelimit-reset": "reset_seconds",
    "x-tokenlimit-limit": "token_limit",
    "x-tokenlimit-remaining": "token_remaining",
    "x-ratelimit-limit-dynamic": "request_limit_dynamic",
    "x-ratelimit-remaining-dynamic": "request_remaining_dynamic",
    "x-tokenlimit-limit-dynamic": "token_limit_dynamic",
    "x-tokenlimit-remaining-dynamic": "token_remaining_dynamic",
    "retry-after-ms": "retry_after_ms",
}


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """Rate-limit headroom and retry hints from one response; None means the header was absent or garbage."""

    request_limit: float | None = None
    request_remaining: float | None = None
    reset_seconds: float | None = None
    token_limit: float | None = None
    token_remaining: float | None = None
    request_limit_dynamic: float | None = None
    request_remaining_dynamic: float | None = None
    token_limit_dynamic: float | None = None
    token_remaining_dynamic: float | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None

    @property
    def is_empty(self) -> bool:
        """True when the response carried no usable rate-limit header at all."""
        return all(getattr(self, f.name) is None for f in fields(self))

    @property
    def request_headroom_percent(self) -> float | None:
        """Remaining requests as a percentage of the limit (static headers first, then dynamic)."""
        return _first_known(
            _headroom(self.request_remaining, self.request_limit),
            _headroom(self.request_remaining_dynamic, self.request_limit_dynamic),
        )

    @property
    def token_headroom_percent(self) -> float | None:
        """Remaining tokens as a percentage of the limit (static headers first, then dynamic)."""
        return _first_known(
            _headroom(self.token_remaining, self.token_limit),
            _headroom(self.token_remaining_dynamic, self.token_limit_dynamic),
        )

    def retry_after_seconds(self) -> float | None:
        """The server's wait hint in seconds: retry-after-ms, else retry-after, else x-ratelimit-reset."""
        if self.retry_after_ms is not None:
            return self.retry_after_ms / 1000.0
        if self.retry_after is not None:
            return self.retry_after
        return self.reset_seconds

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the parsed values, for snapshots and JSON."""
        return asdict(self)


def parse_ratelimit_headers(headers: Mapping[str, str] | None, now: datetime | None = None) -> RateLimitInfo:
    """Read every rate-limit header Together may send; garbage becomes None, never an exception."""
    try:
        lowered = _lower_keys(headers)
        # Only the headers present are parsed (responses carry a few of the eleven); the rest stay None.
        values: dict[str, float | None] = {
            _NUMERIC_HEADERS[header]: _number(value) for header, value in lowered.items()
            if header in _NUMERIC_HEADERS
        }
        if "retry-after" in lowered:
            values["retry_after"] = _retry_after(lowered["retry-after"], now)
        return RateLimitInfo(**values)
    except Exception:  # a broken header mapping must not break the request that carried it
        return RateLimitInfo()


def _lower_keys(headers: Mapping[str, str] | None) -> dict[str, str]:
    if not headers:
        return {}
    return {str(key).lower(): str(value).strip() for key, value in headers.items()}


def _number(value: str | None) -> float | None:
    """A finite, non-negative number; integers stay ints so counts display without '.0'."""
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number


def _retry_after(value: str | None, now: datetime | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    seconds = _number(value)
    if seconds is not None or not value:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _headroom(remaining: float | None, limit: float | None) -> float | None:
    if remaining is None or not limit:
        return None
    return max(0.0, min(100.0, remaining / limit * 100.0))


def _first_known(first: float | None, second: float | None) -> float | None:
    return first if first is not None else second
