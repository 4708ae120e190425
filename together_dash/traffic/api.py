"""JSON API of the traffic app: ingest request logs; read requests, error groups and usage.

POST /api/ingest takes an app key (Bearer tdk_...). The read endpoints take a logged-in session or an
ops token (Bearer tdo_..., manage.py create_api_token). Answers carry ids, prefixes and numbers only,
never a secret.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from ninja import Field, Query, Router, Schema, Status
from ninja.security import SessionAuth
from ninja.security.http import HttpAuthBase
from pydantic import AfterValidator, TypeAdapter

from together_dash.core.roles import is_viewer
from together_dash.keys.models import ApiToken, AppKey, IssuedKey
from together_dash.traffic import csv_export, ingest, listing, rollups
from together_dash.traffic.models import CATEGORY_CHOICES, ErrorGroup
from together_dash.traffic.recording import RecordResult, record_entries

router = Router(tags=["traffic"])

Category = Literal["auth", "billing", "rate_limit", "validation", "not_found", "server", "network"]
assert set(Category.__args__) == {value for value, _ in CATEGORY_CHOICES}
RETRY_AFTER_SECONDS = 5
TOUCH_EVERY = timedelta(minutes=1)
USAGE_MAX_SPAN = timedelta(days=366)


def _in_utc(value: datetime) -> datetime:
    """Query times in UTC: PostgreSQL refuses offsets past 15:59 that ISO 8601 (and Python) allow."""
    try:
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError("the time is out of range in UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(_in_utc)]
# Integers the database can hold (64-bit): a bigger id or offset is a 422 here, not an overflow (500) there.
MAX_DB_INT = 2**63 - 1
DbInt = Annotated[int, Field(ge=-MAX_DB_INT, le=MAX_DB_INT)]


# ---- authentication ----------------------------------------------------------------------------------

def bearer_token(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticate(model: type[IssuedKey], presented: str | None) -> IssuedKey | None:
    """The usable key or token the presented secret belongs to, compared in constant time."""
    parts = model.split(presented) if presented else None
    if parts is None:
        return None
    prefix, whole = parts
    key = model.objects.filter(prefix=prefix).first()
    if key is None or not key.is_usable or not key.matches(whole):
        return None
    _touch(key)
    return key


def _touch(key: IssuedKey) -> None:
    """Note the last use, at most once a minute per key, so busy callers add no write per request."""
    now = timezone.now()
    if key.last_used_at is None or key.last_used_at < now - TOUCH_EVERY:
        type(key).objects.filter(pk=key.pk).update(last_used_at=now)


class OpsTokenAuth(HttpAuthBase):
    """Authorization: Bearer tdo_... (an ops token from manage.py create_api_token)."""

    openapi_scheme = "bearer"

    def __call__(self, request: HttpRequest) -> ApiToken | None:
        return authenticate(ApiToken, bearer_token(request))


class ViewerSessionAuth(SessionAuth):
    """A logged-in session whose user has a dashboard role; a login alone reads nothing."""

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = super().authenticate(request, key)
        return user if user is not None and is_viewer(user) else None


READ_AUTH = [OpsTokenAuth(), ViewerSessionAuth()]


# ---- ingest ------------------------------------------------------------------------------------------

class Problem(Schema):
    detail: str


class ValidationProblem(Schema):
    """A request that failed validation: one entry per problem, saying where (loc) and what (msg)."""

    detail: list[dict[str, Any]]


def read_responses(**responses: Any) -> dict[int, Any]:
    """An endpoint's answers with the ones every read endpoint can give: 400 for a NUL byte in the URL
    (core.middleware refuses it first), 401 without a usable ops token or viewer session, 422 when a
    parameter does not validate."""
    given = {int(code[1:]): schema for code, schema in responses.items()}
    return {400: Problem, 401: Problem, 422: ValidationProblem, **given}


class TogetherErrorBody(Schema):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class TogetherError(Schema):
    error: TogetherErrorBody


class FieldProblem(Schema):
    field: str
    message: str


class AcceptedRecord(Schema):
    index: int
    id: str | None = None
    duplicate: bool = Field(description="Already stored by an earlier request: skipped, not counted again.")


class RejectedRecord(Schema):
    index: int
    id: str | None = None
    errors: list[FieldProblem]


class IngestAnswer(Schema):
    created: int
    duplicates: int
    accepted: list[AcceptedRecord]
    rejected: list[RejectedRecord]


def _inline_refs(schema: Any, definitions: dict[str, Any]) -> Any:
    """Resolve pydantic's local $defs, which would point at the wrong root inside an OpenAPI document."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline_refs(definitions[schema["$ref"].rsplit("/", 1)[-1]], definitions)
        return {key: _inline_refs(value, definitions) for key, value in schema.items() if key != "$defs"}
    if isinstance(schema, list):
        return [_inline_refs(item, definitions) for item in schema]
    return schema


def _ingest_body_schema() -> dict[str, Any]:
    schema = TypeAdapter(list[ingest.IngestRecord]).json_schema()
    array = _inline_refs(schema, schema.get("$defs", {}))
    return {
        "required": True,
        "description": "A JSON array of records, or JSON lines (Content-Type: application/x-ndjson).",
        "content": {
            "application/json": {"schema": array},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }


def together_error(
    status: int, message: str, code: str, error_type: str = "invalid_request_error"
) -> JsonResponse:
    """An error in the shape Together (and so every OpenAI-style client) uses."""
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return JsonResponse(body, status=status)


@router.post(
    "/ingest",
    auth=None,
    response={
        200: IngestAnswer, 400: IngestAnswer | Problem, 401: TogetherError, 413: Problem, 503: TogetherError,
    },
    openapi_extra={"requestBody": _ingest_body_schema()},
    summary="Store request logs of traffic that did not go through the proxy",
)
def ingest_records(request: HttpRequest) -> HttpResponse:
    """Each record is accepted or rejected on its own; authenticate with Authorization: Bearer tdk_...

    Re-sending records with the same id is harmless: they are reported as duplicates, not counted again.
    """
    try:
        return _ingest(request)
    except (OperationalError, InterfaceError):
        message = "The dashboard's database is unavailable; retry later."
        response = together_error(503, message, "database_unavailable", "server_error")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


def _ingest(request: HttpRequest) -> HttpResponse:
    limit = settings.INGEST_MAX_BYTES
    if _content_length(request) > limit:
        return _too_large(f"The body is larger than {limit} bytes; send smaller batches.")
    app_key = authenticate(AppKey, bearer_token(request))
    if app_key is None:
        return together_error(401, "Invalid or missing app key; send 'Authorization: Bearer tdk_...'.",
                              "invalid_api_key")
    body = request.read(limit + 1)
    if len(body) > limit:
        return _too_large(f"The body is larger than {limit} bytes; send smaller batches.")
    try:
        records = ingest.split_records(body, request.content_type or "")
    except ingest.BodyError as exc:
        return JsonResponse({"detail": str(exc)}, status=400)
    if len(records) > settings.INGEST_MAX_RECORDS:
        return _too_large(f"More than {settings.INGEST_MAX_RECORDS} records; send smaller batches.")
    parsed = ingest.parse_records(records, _with_upstream(app_key))
    result = record_entries(parsed.entries) if parsed.entries else RecordResult()
    return _ingest_answer(parsed, result)


def _content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _too_large(message: str) -> JsonResponse:
    return JsonResponse({"detail": message}, status=413)


def _with_upstream(app_key: IssuedKey) -> AppKey:
    """The app key with its upstream key loaded once, not once per record."""
    assert isinstance(app_key, AppKey)
    if app_key.upstream_key_id is not None:
        app_key.upstream_key  # noqa: B018 (loads the relation once)
    return app_key


def _ingest_answer(parsed: ingest.ParsedBody, result: RecordResult) -> JsonResponse:
    duplicates = set(result.duplicate_indexes)
    accepted = [
        {"index": index, "id": client_id, "duplicate": position in duplicates}
        for position, (index, client_id) in enumerate(zip(parsed.indexes, parsed.client_ids, strict=True))
    ]
    rejected = [{"index": r.index, "id": r.id, "errors": r.errors} for r in parsed.rejected]
    body = {"created": result.created, "duplicates": result.duplicates, "accepted": accepted}
    status = 400 if rejected and not accepted else 200
    return JsonResponse({**body, "rejected": rejected}, status=status)


# ---- requests ----------------------------------------------------------------------------------------

class RequestQuery(Schema):
    start: UtcDatetime | None = Field(None, description="Default: end minus 24 hours.")
    end: UtcDatetime | None = Field(None, description="Default: now. At most 31 days after start.")
    category: Category | None = None
    kind: str | None = None
    model: str | None = None
    key: DbInt | None = Field(None, description="Upstream key id.")
    status: DbInt | None = None
    app_key: DbInt | None = Field(None, description="App key id.")

    def window(self) -> listing.Window:
        return listing.window(self.start, self.end)

    def filters(self) -> listing.RequestFilters:
        return listing.RequestFilters(
            category=self.category, kind=self.kind, model=self.model, key_id=self.key, status=self.status,
            app_key_id=self.app_key,
        )


class RequestOut(Schema):
    id: int
    created_at: datetime
    source: str
    app_key_id: int | None
    upstream_key_id: int | None
    key_fingerprint: str
    client_id: str | None
    method: str
    endpoint: str
    model: str
    model_served: str
    stream: bool
    status: int | None
    latency_ms: float | None
    ttft_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cached_tokens: int | None
    cost_usd: Decimal | None
    request_id: str
    ratelimit_remaining: int | None
    tokenlimit_remaining: int | None
    category: str
    kind: str
    error_message: str
    error_group_id: int | None


class RequestPage(Schema):
    start: datetime
    end: datetime
    items: list[RequestOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


@router.get("/requests", auth=READ_AUTH, response=read_responses(s200=RequestPage, s400=Problem),
            summary="Request logs")
def list_requests(
    request: HttpRequest,
    query: Query[RequestQuery],
    limit: int = Query(listing.DEFAULT_LIMIT, ge=1, le=listing.MAX_LIMIT),
    cursor: str | None = None,
) -> Status[dict[str, Any]]:
    """Newest first, keyset-paginated within a time window of at most 31 days (default: the last 24 hours)."""
    try:
        span = query.window()
        rows, next_cursor = listing.page(span, query.filters(), limit, cursor)
    except listing.FilterError as exc:
        return Status(400, {"detail": str(exc)})
    items = [listing.log_fields(row) for row in rows]
    return Status(200, {"start": span.start, "end": span.end, "items": items, "next_cursor": next_cursor})


@router.get(
    "/requests.csv", auth=READ_AUTH, response=read_responses(s400=Problem), summary="Request logs as CSV",
    openapi_extra={"responses": {200: {
        "description": "CSV with a header row, streamed.",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }}},
)
def export_requests(
    request: HttpRequest, query: Query[RequestQuery]
) -> StreamingHttpResponse | Status[dict[str, str]]:
    """The same filters and window as /api/requests, every matching row, streamed."""
    try:
        span = query.window()
    except listing.FilterError as exc:
        return Status(400, {"detail": str(exc)})
    return csv_export.streaming_response(span, query.filters(), asynchronous=isinstance(request, ASGIRequest))


# ---- error groups ------------------------------------------------------------------------------------

class ErrorGroupQuery(Schema):
    state: Literal["open", "resolved", "all"] = "open"
    category: Category | None = None
    kind: str | None = None
    model: str | None = None
    key: DbInt | None = Field(None, description="Upstream key id.")
    since: UtcDatetime | None = Field(None, description="Only groups seen at or after this time.")
    sort: Literal["last_seen", "first_seen", "count"] = "last_seen"


class ErrorGroupOut(Schema):
    id: int
    fingerprint: str
    category: str
    kind: str
    model: str
    endpoint: str
    upstream_key_id: int | None
    first_seen: datetime
    last_seen: datetime
    count: int
    last_status: int | None
    last_message: str
    state: str
    resolved_at: datetime | None
    retryable: bool | None
    cause: str
    fix: str


class ErrorGroupPage(Schema):
    items: list[ErrorGroupOut]
    total: int


@router.get("/errors", auth=READ_AUTH, response=read_responses(s200=ErrorGroupPage), summary="Error groups")
def list_errors(
    request: HttpRequest,
    query: Query[ErrorGroupQuery],
    limit: int = Query(listing.DEFAULT_LIMIT, ge=1, le=listing.MAX_LIMIT),
    offset: int = Query(0, ge=0, le=MAX_DB_INT),
) -> dict[str, Any]:
    """Errors grouped by (category, kind, model, endpoint, upstream key), with the cause and the fix."""
    filters = listing.GroupFilters(
        state=None if query.state == "all" else query.state, category=query.category, kind=query.kind,
        model=query.model, key_id=query.key, since=query.since,
    )
    groups = listing.error_groups(filters, query.sort)
    return {"items": [_group_fields(g) for g in groups[offset: offset + limit]], "total": groups.count()}


def _group_fields(group: ErrorGroup) -> dict[str, Any]:
    info = group.info
    return {
        "id": group.id, "fingerprint": group.fingerprint, "category": group.category, "kind": group.kind,
        "model": group.model, "endpoint": group.endpoint, "upstream_key_id": group.upstream_key_id,
        "first_seen": group.first_seen, "last_seen": group.last_seen, "count": group.count,
        "last_status": group.last_status, "last_message": group.last_message, "state": group.state,
        "resolved_at": group.resolved_at, "retryable": info.retryable if info else None,
        "cause": info.cause if info else "", "fix": info.fix if info else "",
    }


# ---- usage -------------------------------------------------------------------------------------------

class UsageQuery(Schema):
    start: UtcDatetime | None = Field(None, description="Default: end minus 24 hours.")
    end: UtcDatetime | None = Field(None, description="Default: now.")
    key: DbInt | None = Field(None, description="Upstream key id.")
    model: str | None = None
    step: Literal["minute", "hour"] | None = Field(
        None, description="Default: minute up to 3 hours (while minute rollups are kept), else hour. "
        "minute allows up to 24 hours."
    )


class UsageCountsOut(Schema):
    requests: int
    errors: int
    errors_by_category: dict[str, int]
    error_rate: float | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: Decimal = Field(description="Requests with a known cost only: see unpriced_requests.")
    unpriced_requests: int = Field(
        description="Requests with token counts but no cost: their model has no price in the catalog."
    )
    latency_avg_ms: float | None
    latency_p50_ms: float | None = Field(description="A histogram bucket bound; null above 10 s or unknown.")
    latency_p95_ms: float | None
    latency_histogram: dict[str, int]


class UsagePointOut(UsageCountsOut):
    bucket: datetime


class UsageOut(Schema):
    step: str
    start: datetime
    end: datetime
    totals: UsageCountsOut
    series: list[UsagePointOut]


@router.get("/usage", auth=READ_AUTH, response=read_responses(s200=UsageOut, s400=Problem),
            summary="Usage over time")
def get_usage(request: HttpRequest, query: Query[UsageQuery]) -> Status[dict[str, Any]]:
    """Requests, errors per category, tokens, cost and latency per bucket, from the rollups."""
    end = query.end or timezone.now()
    try:
        start = query.start or end - listing.DEFAULT_SPAN
    except OverflowError:  # an end in year 1: there is no day before it
        return Status(400, {"detail": "end is too early: give a start, or a later end."})
    if start >= end or end - start > USAGE_MAX_SPAN:
        return Status(400, {"detail": f"start must be before end, at most {USAGE_MAX_SPAN.days} days apart."})
    try:
        series = rollups.usage_series(start, end, key_id=query.key, model=query.model, step=query.step)
    except ValueError as exc:
        return Status(400, {"detail": str(exc)})
    return Status(200, {
        "step": series.step, "start": series.start, "end": series.end, "totals": _counts(series.totals),
        "series": [{"bucket": point.bucket, **_counts(point.counts)} for point in series.points],
    })


def _counts(counts: rollups.UsageCounts) -> dict[str, Any]:
    return {
        "requests": counts.requests,
        "errors": counts.errors,
        "errors_by_category": counts.errors_by_category,
        "error_rate": counts.error_rate,
        "prompt_tokens": counts.prompt_tokens,
        "completion_tokens": counts.completion_tokens,
        "total_tokens": counts.total_tokens,
        "cost_usd": counts.cost_usd,
        "unpriced_requests": counts.unpriced_requests,
        "latency_avg_ms": counts.latency_avg_ms,
        "latency_p50_ms": counts.latency_percentile_ms(0.5),
        "latency_p95_ms": counts.latency_percentile_ms(0.95),
        "latency_histogram": counts.latency_histogram,
    }
