"""The ingest API's body: JSON array or JSON lines, each record validated on its own into a LogEntry."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from django.utils import timezone
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from together_dash.keys.models import AppKey
from together_dash.together.errors import ClassifiedError, classify_error
from together_dash.together.ratelimits import RateLimitInfo, parse_ratelimit_headers
from together_dash.traffic.entries import LogEntry

JSON_LINES_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines",
     "application/jsonlines", "application/json-lines"}
)
INT4 = 2**31 - 1
# A record from the future is a clock problem; it would also sit above every chart's "now".
MAX_CLOCK_SKEW = timedelta(minutes=5)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


class BodyError(ValueError):
    """The body as a whole is not JSON or JSON lines; the message says why and holds no record data."""


def _storable(value: str) -> str:
    """Neither database stores NUL, and a lone surrogate cannot be encoded for either."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if value.isascii():  # the usual case, and cheap: no surrogate can be in it
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def _utc(value: datetime) -> datetime:
    try:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    if value < EARLIEST:
        raise ValueError("must be after 2000-01-01")
    if value > timezone.now() + MAX_CLOCK_SKEW:
        raise ValueError("is in the future; check the sending machine's clock")
    return value


Text = Annotated[str, AfterValidator(_storable)]
Count = Annotated[int, Field(ge=0, le=INT4)]
Millis = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]


class IngestUsage(BaseModel):
    """Token counts as Together's usage object reports them; a missing count stays unknown."""

    model_config = ConfigDict(extra="ignore")

    prompt_tokens: Count | None = None
    completion_tokens: Count | None = None
    total_tokens: Count | None = None
    cached_tokens: Count | None = None


class IngestRecord(BaseModel):
    """One request an application made to Together, as it reports it to POST /api/ingest."""

    model_config = ConfigDict(extra="ignore")

    id: Annotated[Text, Field(min_length=1, max_length=100)] | None = Field(
        None, description="Your id for the record; re-sending it is harmless (idempotent). Recommended."
    )
    timestamp: Annotated[datetime, AfterValidator(_utc)] | None = Field(
        None, description="When the request was sent (ISO 8601; UTC when no offset); default: now."
    )
    endpoint: Annotated[Text, Field(min_length=1, max_length=200)] = Field(
        description="Together path, e.g. /v1/chat/completions."
    )
    method: Annotated[str, Field(pattern=r"^[A-Za-z]{1,8}$")] = "POST"
    model: Annotated[Text, Field(max_length=200)] = Field("", description="The model the request asked for.")
    model_served: Annotated[Text, Field(max_length=200)] = ""
    stream: bool = False
    status: Annotated[int, Field(ge=100, le=599)] | None = Field(
        description="HTTP status from Together; null when no response came (see error_type)."
    )
    latency_ms: Millis | None = None
    ttft_ms: Millis | None = None
    usage: IngestUsage | None = None
    request_id: Annotated[Text, Field(max_length=100)] = ""
    headers: dict[str, Text | int | float] | None = Field(
        None, description="Response headers; the rate-limit ones (x-ratelimit-*, x-tokenlimit-*) are kept."
    )
    error: dict[str, Any] | Text | None = Field(
        None, description="The error body Together sent (object or text), classified when status >= 400."
    )
    error_type: Literal["timeout", "connection_error"] | None = Field(
        None, description="Why no response came (status null); default connection_error."
    )


RECORD = TypeAdapter(IngestRecord)


@dataclass(slots=True)
class Rejection:
    index: int
    id: str | None
    errors: list[dict[str, str]]


@dataclass(slots=True)
class ParsedBody:
    """Records that validated, as entries with their position in the body, and the rejected ones."""

    entries: list[LogEntry] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    client_ids: list[str | None] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


class _Unparsable:
    """A JSON line that did not parse; it becomes that record's rejection."""

    def __init__(self, message: str) -> None:
        self.message = message


# ---- the body ----------------------------------------------------------------------------------------

def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str) -> Any:
    """json.loads without NaN/Infinity; any parse failure is a ValueError."""
    try:
        return json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def split_records(body: bytes, content_type: str) -> list[Any]:
    """The body's records: a JSON array, or one JSON value per line for JSON lines."""
    try:
        text = body.decode("utf-8-sig")  # a leading byte-order mark is not part of the JSON
    except UnicodeDecodeError:
        raise BodyError("The body is not UTF-8 text.") from None
    if not text.strip():
        raise BodyError("The body is empty; send a JSON array of records or JSON lines.")
    if content_type in JSON_LINES_TYPES:
        return _json_lines(text)
    try:
        value = _loads(text)
    except ValueError:
        if "\n" in text.strip():
            return _json_lines(text)  # JSON lines sent without their content type
        raise BodyError("The body is not valid JSON or JSON lines.") from None
    if not isinstance(value, list):
        raise BodyError("The body must be a JSON array of records (or JSON lines, one record per line).")
    return value


def _json_lines(text: str) -> list[Any]:
    records: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(_loads(line))
        except ValueError:
            records.append(_Unparsable(f"line {number} is not valid JSON"))
    if all(isinstance(record, _Unparsable) for record in records):
        raise BodyError("The body is not valid JSON or JSON lines.")
    return records


# ---- the records -------------------------------------------------------------------------------------

def parse_records(records: list[Any], app_key: AppKey) -> ParsedBody:
    """Validate each record on its own; the valid ones become entries attributed to the app key."""
    parsed = ParsedBody()
    now = timezone.now()
    for index, raw in enumerate(records):
        record_id = _raw_id(raw)
        problem = _shape_problem(raw)
        if problem:
            parsed.rejected.append(Rejection(index, record_id, [{"field": "", "message": problem}]))
            continue
        try:
            record = RECORD.validate_python(raw)
        except ValidationError as exc:
            parsed.rejected.append(Rejection(index, record_id, _reasons(exc)))
            continue
        parsed.entries.append(to_entry(record, app_key, now))
        parsed.indexes.append(index)
        parsed.client_ids.append(record.id)
    return parsed


def _shape_problem(raw: Any) -> str:
    if isinstance(raw, _Unparsable):
        return raw.message
    if not isinstance(raw, dict):
        return "a record must be a JSON object"
    return ""


def _raw_id(raw: Any) -> str | None:
    """The record's id to echo in the answer, only when it is a plain short string."""
    value = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(value, str) and 0 < len(value) <= 100:
        try:
            return _storable(value)
        except ValueError:
            return None
    return None


def _reasons(exc: ValidationError) -> list[dict[str, str]]:
    """Field and message of each problem; the offending input is left out, it may hold anything."""
    return [
        {"field": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def to_entry(record: IngestRecord, app_key: AppKey, now: datetime) -> LogEntry:
    """A validated record as the LogEntry record_entries() stores, classified like proxied traffic."""
    headers = {name: str(value) for name, value in (record.headers or {}).items()}
    limits = parse_ratelimit_headers(headers)
    usage = record.usage or IngestUsage()
    upstream = app_key.upstream_key
    entry = LogEntry(
        created_at=record.timestamp or now,
        endpoint=record.endpoint,
        method=record.method.upper(),
        source="ingest",
        app_key_id=app_key.pk,
        upstream_key_id=app_key.upstream_key_id,
        key_fingerprint=upstream.fingerprint if upstream else "",
        client_id=record.id,
        model_requested=record.model,
        model_served=record.model_served,
        stream=record.stream,
        status_code=record.status,
        latency_ms=record.latency_ms,
        ttft_ms=record.ttft_ms,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=_total(usage),
        cached_tokens=usage.cached_tokens,
        request_id=record.request_id,
    )
    _set_limits(entry, limits)
    classified = _classify(record, headers)
    if classified is not None:
        entry.category, entry.kind = classified.category, classified.kind
        entry.error_message = classified.message
        entry.request_id = entry.request_id or (classified.request_id or "")[:100]
    return entry


def _total(usage: IngestUsage) -> int | None:
    if usage.total_tokens is not None:
        return usage.total_tokens
    if usage.prompt_tokens is not None and usage.completion_tokens is not None:
        return min(usage.prompt_tokens + usage.completion_tokens, INT4)
    return None


def _classify(record: IngestRecord, headers: dict[str, str]) -> ClassifiedError | None:
    """Transport errors by their type, HTTP errors by status and body, exactly as the proxy classifies."""
    if record.status is None:
        exc = TimeoutError() if record.error_type == "timeout" else ConnectionError()
        return classify_error(None, record.error, headers, path=record.endpoint, exc=exc)
    if record.status >= 400:
        status, path, method = record.status, record.endpoint, record.method
        return classify_error(status, record.error, headers, path=path, method=method)
    return None


def _as_int(value: float | None) -> int | None:
    if value is None or not math.isfinite(value) or value > INT4:
        return None
    return int(value)


def _set_limits(entry: LogEntry, limits: RateLimitInfo) -> None:
    entry.ratelimit_limit = _as_int(_first(limits.request_limit, limits.request_limit_dynamic))
    entry.ratelimit_remaining = _as_int(_first(limits.request_remaining, limits.request_remaining_dynamic))
    entry.ratelimit_reset = limits.reset_seconds
    entry.tokenlimit_limit = _as_int(_first(limits.token_limit, limits.token_limit_dynamic))
    entry.tokenlimit_remaining = _as_int(_first(limits.token_remaining, limits.token_remaining_dynamic))


def _first(value: float | None, fallback: float | None) -> float | None:
    return value if value is not None else fallback
