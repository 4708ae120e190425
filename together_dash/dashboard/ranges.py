"""The time range and the key and model filters every dashboard page and chart endpoint reads.

Query string: range=1h|24h|7d|30d|custom (custom with start and end, as <input type=datetime-local>
sends them, in the server's time zone), key=<upstream key id>, model=<model id>.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from django.http import QueryDict
from django.utils import timezone
from django.utils.dateparse import parse_datetime

PRESETS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
PRESET_LABELS: dict[str, str] = {
    "1h": "Last hour",
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
}
DEFAULT_PRESET = "24h"
CUSTOM = "custom"
# As long as the request log explorer may read (traffic.listing.MAX_SPAN), so one range works everywhere.
MAX_SPAN = timedelta(days=31)
MODEL_MAX_LENGTH = 200
INPUT_FORMAT = "%Y-%m-%dT%H:%M"


@dataclass(frozen=True, slots=True)
class Range:
    """A half-open time range [start, end) plus the optional key and model filters."""

    name: str
    start: datetime
    end: datetime
    key_id: int | None = None
    model: str | None = None
    # Why the requested range could not be used (the default was used instead); shown to the user.
    problem: str = ""

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    @property
    def is_custom(self) -> bool:
        return self.name == CUSTOM

    @property
    def phrase(self) -> str:
        """The range inside a sentence: "No traffic in the last hour", "... between 08:00 and 09:00"."""
        if self.is_custom:
            return f"between {self.start_input.replace('T', ' ')} and {self.end_input.replace('T', ' ')}"
        return "in " + PRESET_LABELS[self.name].replace("Last", "the last")

    @property
    def start_input(self) -> str:
        return timezone.localtime(self.start).strftime(INPUT_FORMAT)

    @property
    def end_input(self) -> str:
        return timezone.localtime(self.end).strftime(INPUT_FORMAT)

    def previous(self) -> Range:
        """The period of the same length just before this one, for comparisons."""
        return replace(self, start=self.start - self.span, end=self.start)

    def params(self) -> dict[str, str]:
        """The query parameters that reproduce this range and its filters."""
        params = {"range": self.name}
        if self.is_custom:
            params.update(start=self.start_input, end=self.end_input)
        if self.key_id is not None:
            params["key"] = str(self.key_id)
        if self.model:
            params["model"] = self.model
        return params

    @property
    def query(self) -> str:
        return urlencode(self.params())


def parse_range(params: QueryDict | dict[str, str], now: datetime | None = None) -> Range:
    """The range the query string asks for; anything unusable falls back to the last 24 hours."""
    now = now or timezone.now()
    key_id, model = _key_id(params.get("key")), _model(params.get("model"))
    name = params.get("range") or DEFAULT_PRESET
    if name in PRESETS:
        return Range(name, now - PRESETS[name], now, key_id, model)
    if name == CUSTOM:
        start, end, problem = _custom(params.get("start"), params.get("end"), now)
        if not problem:
            return Range(CUSTOM, start, end, key_id, model)
    else:
        problem = f"Unknown range {name[:20]!r}; showing the last 24 hours."
    default = PRESETS[DEFAULT_PRESET]
    return Range(DEFAULT_PRESET, now - default, now, key_id, model, problem)


def _custom(start_text: str | None, end_text: str | None, now: datetime) -> tuple[datetime, datetime, str]:
    start, end = _moment(start_text), _moment(end_text) or now
    if start is None:
        return now, now, "A custom range needs a start time; showing the last 24 hours."
    if start >= end:
        return now, now, "The start of a custom range must be before its end; showing the last 24 hours."
    if end - start > MAX_SPAN:
        return now, now, f"A custom range may span at most {MAX_SPAN.days} days; showing the last 24 hours."
    return start, end, ""


def _moment(text: str | None) -> datetime | None:
    """A datetime from the query string; naive values are in the server's time zone."""
    try:
        value = parse_datetime(text.strip()) if text else None
    except ValueError:
        return None
    if value is None:
        return None
    try:
        # In UTC: PostgreSQL refuses offsets past 15:59 that ISO 8601 allows.
        return timezone.make_aware(value) if timezone.is_naive(value) else value.astimezone(UTC)
    except OverflowError:
        return None


def _key_id(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdigit() and len(text) < 19 else None


def _model(text: str | None) -> str | None:
    text = (text or "").strip()
    return text[:MODEL_MAX_LENGTH] or None
