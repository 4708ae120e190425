"""Turn batches of LogEntry into RequestLog rows, error groups and usage rollups, in one transaction.

Many writers run at once (proxy processes, the ingest API, workers), so every shared counter is
incremented in the database with INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n, after the
batch was aggregated in Python so each group or rollup row is touched once per batch. Rows are sent in
a sorted order so two writers lock them in the same order and cannot deadlock each other.

Request logs go in with COPY on PostgreSQL (executemany on SQLite). Ingest records carrying a client id
are first checked against the (app key, client id) unique index, so a re-send is skipped before it
counts anywhere; two writers racing with the same ids are caught by that constraint, and the loser's
batch is rolled back and checked again.
"""
from __future__ import annotations

import bisect
import functools
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.db.backends.utils import CursorWrapper

from together_dash.catalog.pricing import PriceTable, prices
from together_dash.together.redact import REDACTED, redact
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.models import (
    COUNTER_COLUMNS,
    ERROR_COLUMNS,
    LATENCY_BOUNDS_MS,
    AppKeySpendHour,
    ErrorGroup,
    RequestBodySample,
    RequestLog,
    UsageDay,
    UsageHour,
    UsageMinute,
    is_unpriced,
)
from together_dash.traffic.signals import batch_recorded

INSERT_CHUNK = 1000
RESEND_RACE_ATTEMPTS = 3
_INT4 = 2**31 - 1
_INT2 = 2**15 - 1
_MAX_COST = Decimal("999999")
_COST_PLACES = Decimal("0.00000001")

LOG_COLUMNS: tuple[str, ...] = (
    "created_at", "source", "app_key_id", "upstream_key_id", "client_id", "key_fingerprint", "method",
    "endpoint", "model_requested", "model_served", "stream", "status_code", "latency_ms", "ttft_ms",
    "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "cost_usd", "request_id",
    "ratelimit_limit", "ratelimit_remaining", "ratelimit_reset", "tokenlimit_limit", "tokenlimit_remaining",
    "category", "kind", "error_message", "error_group_id",
)
# Positions in a log row, for the aggregation loops (attribute lookups would cost more per row).
_AT = {column: position for position, column in enumerate(LOG_COLUMNS)}
_CREATED, _KEY, _CLIENT_ID = _AT["created_at"], _AT["upstream_key_id"], _AT["client_id"]
_APP_KEY = _AT["app_key_id"]
_ENDPOINT, _STATUS, _LATENCY = _AT["endpoint"], _AT["status_code"], _AT["latency_ms"]
_METHOD = _AT["method"]
_REQUESTED, _SERVED = _AT["model_requested"], _AT["model_served"]
_COST, _GROUP = _AT["cost_usd"], _AT["error_group_id"]
_CATEGORY, _KIND, _MESSAGE = _AT["category"], _AT["kind"], _AT["error_message"]
_TOKENS = (_AT["prompt_tokens"], _AT["completion_tokens"], _AT["total_tokens"])
_ERROR_OFFSET = {category: 1 + i for i, category in enumerate(ERROR_COLUMNS)}
_TOKENS_AT = COUNTER_COLUMNS.index("prompt_tokens")
_COST_AT = COUNTER_COLUMNS.index("cost_usd")
_UNPRICED_AT = COUNTER_COLUMNS.index("unpriced_requests")
_LATENCY_AT = COUNTER_COLUMNS.index("latency_sum_ms")
_HISTOGRAM_AT = COUNTER_COLUMNS.index("latency_count") + 1


@dataclass(slots=True)
class KeyOutcome:
    """What one batch said about one upstream key: its 402s, successful billed calls, and the first 402."""

    payment_required: int = 0
    successes: int = 0
    first_payment_required_at: datetime | None = None


@dataclass(slots=True)
class RecordResult:
    """Counts of one record_entries() call; duplicates are re-sent ingest records that were skipped."""

    created: int = 0
    duplicates: int = 0
    duplicate_indexes: list[int] = field(default_factory=list)
    keys: dict[int | None, KeyOutcome] = field(default_factory=dict)
    # Cost recorded per (app key id, UTC hour), for the budgets' shared spend counters.
    app_key_spend: dict[tuple[int, datetime], Decimal] = field(default_factory=dict)
    # The entries stored by this batch (re-sent ingest records left out), each with its cost (None:
    # unpriced), for the listeners that report every request elsewhere (the OpenTelemetry export).
    stored: list[tuple[LogEntry, Decimal | None]] = field(default_factory=list)


@dataclass(slots=True)
class _Item:
    """One entry on its way to the database: its row values plus what the aggregates need."""

    index: int
    entry: LogEntry
    row: list
    model: str
    fingerprint: str = ""


def record_entries(entries: Sequence[LogEntry]) -> RecordResult:
    """Store a batch of entries with their error groups and rollups, all or nothing."""
    table = prices()  # read once per batch: the catalog as it is now, whichever process polled it
    items = [_prepare(index, entry, table) for index, entry in enumerate(entries)]
    for attempt in range(1, RESEND_RACE_ATTEMPTS + 1):
        try:
            return _record(items)
        except IntegrityError:
            # Another writer stored one of these client ids between our check and our insert (the
            # unique constraint caught it); the whole batch was rolled back, so check again.
            if attempt == RESEND_RACE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _record(items: list[_Item]) -> RecordResult:
    result = RecordResult()
    new, keyed = _split_keyed(items, result)
    if not new and not keyed:
        return result
    with transaction.atomic(), connection.cursor() as cursor:
        stored = _skip_stored(cursor, keyed)
        _count_duplicates(keyed, stored, result)
        new += [item for item in keyed if _client_key(item) not in stored]
        group_ids = _upsert_groups(cursor, [item for item in new if item.fingerprint])
        _insert_logs(cursor, new, group_ids)
        _upsert_rollups(cursor, new)
        app_key_hours = _upsert_app_key_spend(cursor, new)
    result.created = len(new)
    result.keys = _tally_keys(new)
    result.app_key_spend = {place: counters[1] for place, counters in app_key_hours.items() if counters[1]}
    result.stored = [(item.entry, item.row[_COST]) for item in new]
    _announce(result)
    return result


def _announce(result: RecordResult) -> None:
    """Tell the listeners (the billing alert) about this batch once it is committed; never fails it."""
    transaction.on_commit(
        lambda: batch_recorded.send_robust(sender=RecordResult, result=result), robust=True
    )


# ---- preparing rows ----------------------------------------------------------------------------------

def _prepare(index: int, entry: LogEntry, table: PriceTable) -> _Item:
    """Clean one entry into a row; one bad value must not make the whole batch fail forever."""
    created_at = _utc(entry.created_at)
    model = _stored(entry.model_requested, 200)
    served = _stored(entry.model_served, 200)
    endpoint = _stored(entry.endpoint, 200)
    category = _text(entry.category, 16)
    kind = _text(entry.kind, 40)
    prompt, completion = _int4(entry.prompt_tokens), _int4(entry.completion_tokens)
    cached = _int4(entry.cached_tokens)
    row = [
        created_at, _text(entry.source, 8) or "proxy", entry.app_key_id, entry.upstream_key_id,
        _client_id(entry.client_id) if entry.client_id is not None else None,
        _text(entry.key_fingerprint, 16), _text(entry.method, 8), endpoint, model, served, bool(entry.stream),
        _int(entry.status_code, _INT2), entry.latency_ms, entry.ttft_ms, prompt, completion,
        _int4(entry.total_tokens), cached, log_cost(table, model, served, prompt, completion, cached),
        _stored(entry.request_id, 100), _int4(entry.ratelimit_limit), _int4(entry.ratelimit_remaining),
        entry.ratelimit_reset, _int4(entry.tokenlimit_limit), _int4(entry.tokenlimit_remaining),
        category, kind, _stored(entry.error_message, 1000), None,
    ]
    item = _Item(index, entry, row, model or served)
    if category:
        item.fingerprint = ErrorGroup.make_fingerprint(*group_identity(row))
    return item


def group_identity(row: Sequence) -> tuple[str, str, str, str, int | None]:
    """What makes errors one group, from a log row (LOG_COLUMNS): category, kind, model, endpoint, key.

    The model is the one requested, else the one served, as in the rollups.
    """
    model = row[_REQUESTED] or row[_SERVED]
    return row[_CATEGORY], row[_KIND], model, row[_ENDPOINT], row[_KEY]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _stored(value: str | None, limit: int) -> str:
    """A free-text field the client controls, redacted: an app key sent as the model is never stored.

    Redacted before it is cut, so no half of a secret survives the cut; cut roughly first, so a huge
    value costs no more than a long one.
    """
    if not value:
        return ""
    return _text(redact(value[: limit * 4]), limit)


def _client_id(value: str) -> str:
    """The ingest record's own id, redacted like the rest; two secret-like ids stay two ids."""
    cleaned = _stored(value, 100)
    if cleaned != _text(value, 100):
        digest = hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:16]
        cleaned = f"{REDACTED}:{digest}"
    return cleaned


def _text(value: str | None, limit: int) -> str:
    """Cut to the column length and drop what neither database can store (NUL, lone surrogates)."""
    if not value:
        return ""
    value = value[:limit]
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value.replace("\x00", "") if "\x00" in value else value


def _int(value: int | float | None, limit: int) -> int | None:
    if value is None or not -limit <= value <= limit:
        return None
    return int(value)


def _int4(value: int | float | None) -> int | None:
    return _int(value, _INT4)


def log_cost(
    table: PriceTable, requested: str, served: str, prompt: int | None, completion: int | None,
    cached: int | None,
) -> Decimal | None:
    """The cost a log row stores: the catalog's, within what the column holds (else unknown)."""
    if not (requested or served):
        return None
    cost = table.cost_of_request(requested, served, prompt, completion, cached)
    if cost is None or not cost.is_finite() or abs(cost) >= _MAX_COST:
        return None
    return cost.quantize(_COST_PLACES)


def _client_key(item: _Item) -> tuple[int | None, str]:
    return item.entry.app_key_id, item.row[_CLIENT_ID]


def _split_keyed(items: list[_Item], result: RecordResult) -> tuple[list[_Item], list[_Item]]:
    """Entries without a client id are always new; keyed ones may be re-sends, also within the batch."""
    new: list[_Item] = []
    keyed: list[_Item] = []
    seen: set[tuple[int | None, str]] = set()
    for item in items:
        if item.row[_CLIENT_ID] is None:
            new.append(item)
        elif _client_key(item) in seen:
            result.duplicates += 1
            result.duplicate_indexes.append(item.index)
        else:
            seen.add(_client_key(item))
            keyed.append(item)
    return new, keyed


def _count_duplicates(keyed: list[_Item], stored: set[tuple], result: RecordResult) -> None:
    for item in keyed:
        if _client_key(item) in stored:
            result.duplicates += 1
            result.duplicate_indexes.append(item.index)
    result.duplicate_indexes.sort()


# ---- request logs ------------------------------------------------------------------------------------

@functools.cache
def _qn(name: str) -> str:
    # Cached: SQL is built per batch, and connection.ops goes through a thread-local lookup each time.
    return connection.ops.quote_name(name)


def _adapted(values: list) -> list:
    """SQLite needs datetimes as Django stores them (naive UTC text); psycopg adapts them itself."""
    if connection.vendor == "postgresql":
        return values
    adapt = connection.ops.adapt_datetimefield_value
    return [adapt(value) if isinstance(value, datetime) else value for value in values]


def _insert_sql(table: str, columns: Sequence[str], rows: int, tail: str = "") -> str:
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    column_list = ", ".join(_qn(column) for column in columns)
    # Only quoted identifiers from _meta and fixed SQL are formatted in; every value is a parameter.
    values = ", ".join([placeholders] * rows)
    return f"INSERT INTO {_qn(table)} ({column_list}) VALUES {values} {tail}"  # noqa: S608 (identifiers from _meta; values are parameters) # nosec B608


def _chunks(rows: list, size: int = INSERT_CHUNK) -> Iterable[list]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def _skip_stored(cursor: CursorWrapper, keyed: list[_Item]) -> set[tuple[int | None, str]]:
    """The (app key, client id) pairs of this batch that an earlier request already stored."""
    by_app_key: dict[int, list[str]] = {}
    for item in keyed:
        if item.entry.app_key_id is not None:  # without an app key there is nothing to be idempotent per
            by_app_key.setdefault(item.entry.app_key_id, []).append(item.row[_CLIENT_ID])
    stored: set[tuple[int | None, str]] = set()
    for app_key_id, client_ids in by_app_key.items():
        for chunk in _chunks(client_ids):
            cursor.execute(*_stored_ids_query(app_key_id, chunk))
            stored.update((app_key_id, client_id) for (client_id,) in cursor.fetchall())
    return stored


def _stored_ids_query(app_key_id: int, client_ids: list[str]) -> tuple[str, list]:
    """One probe of the (app_key_id, client_id) unique index per id.

    On PostgreSQL a LATERAL probe per id: with a plain IN list and stale statistics after a bulk load,
    the planner scanned every row of the app key instead (hundreds of ms per batch).
    """
    table = _qn(RequestLog._meta.db_table)
    if connection.vendor == "postgresql":
        probe = f"SELECT 1 FROM {table} t WHERE t.app_key_id = %s AND t.client_id = v.client_id LIMIT 1"  # noqa: S608 (identifiers from _meta; values are parameters) # nosec B608
        sql = f"SELECT v.client_id FROM unnest(%s::text[]) AS v(client_id) CROSS JOIN LATERAL ({probe}) hit"  # noqa: S608 (identifiers from _meta; values are parameters) # nosec B608
        return sql, [client_ids, app_key_id]
    placeholders = ", ".join(["%s"] * len(client_ids))
    sql = f"SELECT client_id FROM {table} WHERE app_key_id = %s AND client_id IN ({placeholders})"  # noqa: S608 (identifiers from _meta; values are parameters) # nosec B608
    return sql, [app_key_id, *client_ids]


def _insert_logs(cursor: CursorWrapper, new: list[_Item], group_ids: dict[str, int]) -> None:
    """Insert the new entries, each error already linked to its group."""
    for item in new:
        if item.fingerprint:
            item.row[_GROUP] = group_ids[item.fingerprint]
    sampled = [item for item in new if _body_sample(item.entry)]
    plain = [item for item in new if not _body_sample(item.entry)] if sampled else new
    if sampled:
        _insert_sampled(cursor, sampled)
    if not plain:
        return
    if connection.vendor == "postgresql":
        _copy_rows(cursor, RequestLog._meta.db_table, [item.row for item in plain])
        return
    sql = _insert_sql(RequestLog._meta.db_table, LOG_COLUMNS, 1)
    cursor.executemany(sql, [_adapted(item.row) for item in plain])


def _body_sample(entry: LogEntry) -> dict | None:
    """The proxy's redacted, capped body copy of this entry, when it was sampled."""
    sample = entry.extra.get("body_sample") if entry.extra else None
    return sample if isinstance(sample, dict) and sample else None


_SAMPLE_COLUMNS = ("request_log_id", "created_at", "request_body", "response_body")


def _insert_sampled(cursor: CursorWrapper, sampled: list[_Item]) -> None:
    """Sampled entries: INSERT ... RETURNING their ids (COPY returns none), then their bodies.

    Rows come back in the order of the VALUES list on PostgreSQL and SQLite, as Django's bulk_create
    relies on too. Only sampled requests take this slower path.
    """
    table = RequestLog._meta.db_table
    for chunk in _chunks(sampled):
        sql = _insert_sql(table, LOG_COLUMNS, len(chunk), " RETURNING id")
        cursor.execute(sql, [value for item in chunk for value in _adapted(item.row)])
        ids = [row[0] for row in cursor.fetchall()]
        bodies = []
        for log_id, item in zip(ids, chunk, strict=True):
            sample = _body_sample(item.entry) or {}
            bodies.append([log_id, item.row[_CREATED], str(sample.get("request", "")),
                           str(sample.get("response", ""))])
        cursor.execute(
            _insert_sql(RequestBodySample._meta.db_table, _SAMPLE_COLUMNS, len(bodies)),
            [value for row in bodies for value in _adapted(row)],
        )


# PostgreSQL type names for binary COPY, which must match each column's type exactly.
_COPY_TYPES = {
    "DateTimeField": "timestamptz", "CharField": "text", "BooleanField": "bool", "SmallIntegerField": "int2",
    "IntegerField": "int4", "BigIntegerField": "int8", "BigAutoField": "int8", "FloatField": "float8",
    "DecimalField": "numeric",
}


def _copy_types(columns: Sequence[str]) -> list[str]:
    fields = {field.column: field for field in RequestLog._meta.concrete_fields}
    targets = [getattr(fields[column], "target_field", fields[column]) for column in columns]
    return [_COPY_TYPES[field.get_internal_type()] for field in targets]


_LOG_COPY_TYPES = _copy_types(LOG_COLUMNS)


def _copy_rows(cursor: CursorWrapper, table: str, rows: list[list]) -> None:
    """Binary COPY of log rows into PostgreSQL: several times faster than INSERT, and than text COPY."""
    column_list = ", ".join(_qn(column) for column in LOG_COLUMNS)
    # Django wraps execute() errors into django.db errors; COPY goes around it, so wrap it here too.
    with connection.wrap_database_errors, cursor.cursor.copy(
        f"COPY {_qn(table)} ({column_list}) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(_LOG_COPY_TYPES)
        for row in rows:
            copy.write_row(row)


# ---- error groups ------------------------------------------------------------------------------------

_GROUP_COLUMNS = (
    "fingerprint", "category", "kind", "model", "endpoint", "upstream_key_id", "first_seen", "last_seen",
    "count", "last_message", "last_status", "state",
)


def _group_rows(errors: list[_Item]) -> list[list]:
    """One row per fingerprint: the count, the time span and the newest message of the batch."""
    groups: dict[str, list] = {}
    for item in errors:
        row, created_at = item.row, item.row[_CREATED]
        group = groups.get(item.fingerprint)
        if group is None:
            groups[item.fingerprint] = [
                item.fingerprint, row[_CATEGORY], row[_KIND], item.model, row[_ENDPOINT], row[_KEY],
                created_at, created_at, 1, row[_MESSAGE], row[_STATUS], ErrorGroup.State.OPEN,
            ]
            continue
        group[8] += 1
        group[6] = min(group[6], created_at)
        if created_at >= group[7]:
            group[7], group[9], group[10] = created_at, row[_MESSAGE], row[_STATUS]
    return [groups[fingerprint] for fingerprint in sorted(groups)]


def _upsert_groups(cursor: CursorWrapper, errors: list[_Item]) -> dict[str, int]:
    """Count errors into their groups (created on first sight, reopened if resolved); returns their ids."""
    table = _qn(ErrorGroup._meta.db_table)
    newer = f"excluded.last_seen >= {table}.last_seen"
    recurs = (
        f"{table}.state = 'resolved' "
        f"AND ({table}.resolved_at IS NULL OR excluded.last_seen > {table}.resolved_at)"
    )
    tail = (
        f"ON CONFLICT (fingerprint) DO UPDATE SET count = {table}.count + excluded.count, "
        f"first_seen = CASE WHEN excluded.first_seen < {table}.first_seen "
        f"THEN excluded.first_seen ELSE {table}.first_seen END, "
        f"last_seen = CASE WHEN {newer} THEN excluded.last_seen ELSE {table}.last_seen END, "
        f"last_message = CASE WHEN {newer} THEN excluded.last_message ELSE {table}.last_message END, "
        f"last_status = CASE WHEN {newer} THEN excluded.last_status ELSE {table}.last_status END, "
        f"state = CASE WHEN {recurs} THEN 'open' ELSE {table}.state END, "
        f"resolved_at = CASE WHEN {recurs} THEN NULL ELSE {table}.resolved_at END "
        "RETURNING id, fingerprint"  # identifiers from _meta, values are parameters # nosec B608
    )
    returned = _upsert(cursor, ErrorGroup._meta.db_table, _GROUP_COLUMNS, _group_rows(errors), tail)
    return {fingerprint: group_id for group_id, fingerprint in returned}


# ---- rollups -----------------------------------------------------------------------------------------

def _new_counters() -> list:
    counters: list = [0] * len(COUNTER_COLUMNS)
    counters[_COST_AT] = Decimal(0)
    counters[_LATENCY_AT] = 0.0
    return counters


def _latency_slot(latency: float) -> int:
    """The histogram bucket: the first bound at or above the latency, or the last (> 10 s) bucket."""
    return bisect.bisect_left(LATENCY_BOUNDS_MS, latency)


def _count_into(counters: list, row: list) -> None:
    """Add one request log row (see LOG_COLUMNS) to a rollup's counters (see COUNTER_COLUMNS)."""
    counters[0] += 1
    error_at = _ERROR_OFFSET.get(row[_CATEGORY])
    if error_at is not None:
        counters[error_at] += 1
    prompt, completion, total = row[_TOKENS[0]], row[_TOKENS[1]], row[_TOKENS[2]]
    if prompt is not None:
        counters[_TOKENS_AT] += prompt
    if completion is not None:
        counters[_TOKENS_AT + 1] += completion
    if total is not None:
        counters[_TOKENS_AT + 2] += total
    if row[_COST] is not None:
        counters[_COST_AT] += row[_COST]
    elif is_unpriced(None, prompt, completion, row[_SERVED] or row[_REQUESTED]):
        counters[_UNPRICED_AT] += 1
    latency = row[_LATENCY]
    if latency is not None and 0 <= latency < math.inf:
        counters[_LATENCY_AT] += latency
        counters[_LATENCY_AT + 1] += 1
        counters[_HISTOGRAM_AT + _latency_slot(latency)] += 1


def _aggregate_minutes(stored: list[_Item]) -> dict[tuple, list]:
    buckets: dict[tuple, list] = {}
    for item in stored:
        # 0 stands for "no key" while aggregating so the keys sort; it goes back to NULL in the row.
        key = (_minute(item.row[_CREATED]), item.row[_KEY] or 0, item.model)
        counters = buckets.get(key)
        if counters is None:
            counters = buckets[key] = _new_counters()
        _count_into(counters, item.row)
    return buckets


def _merge(finer: dict[tuple, list], truncate: Callable[[datetime], datetime]) -> dict[tuple, list]:
    """Counters of finer buckets summed into the coarser buckets that truncate() names."""
    coarser: dict[tuple, list] = {}
    for (bucket, key_id, model), counters in finer.items():
        key = (truncate(bucket), key_id, model)
        total = coarser.get(key)
        if total is None:
            coarser[key] = list(counters)
        else:
            coarser[key] = [a + b for a, b in zip(total, counters, strict=True)]
    return coarser


def _minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def _hour(value: datetime) -> datetime:
    return value.replace(minute=0, second=0, microsecond=0)


def _day(value: datetime) -> datetime:
    return value.replace(hour=0, minute=0, second=0, microsecond=0)


def _upsert_rollups(cursor: CursorWrapper, stored: list[_Item]) -> None:
    minutes = _aggregate_minutes(stored)
    hours = _merge(minutes, _hour)
    _upsert_counters(cursor, UsageMinute._meta.db_table, minutes)
    _upsert_counters(cursor, UsageHour._meta.db_table, hours)
    _upsert_counters(cursor, UsageDay._meta.db_table, _merge(hours, _day))


_ROLLUP_COLUMNS = ("bucket", "upstream_key_id", "model", *COUNTER_COLUMNS)
_APP_KEY_SPEND_COLUMNS = ("requests", "cost_usd", "unpriced_requests")


def _aggregate_app_key_hours(stored: list[_Item]) -> dict[tuple[int, datetime], list]:
    """[requests, cost, unpriced requests] per (app key, hour); requests without an app key stay out."""
    hours: dict[tuple[int, datetime], list] = {}
    for item in stored:
        row = item.row
        app_key_id = row[_APP_KEY]
        if app_key_id is None:
            continue
        place = (app_key_id, _hour(row[_CREATED]))
        counters = hours.get(place)
        if counters is None:
            counters = hours[place] = [0, Decimal(0), 0]
        counters[0] += 1
        if row[_COST] is not None:
            counters[1] += row[_COST]
        elif is_unpriced(None, row[_TOKENS[0]], row[_TOKENS[1]], row[_SERVED] or row[_REQUESTED]):
            counters[2] += 1
    return hours


def _upsert_app_key_spend(cursor: CursorWrapper, stored: list[_Item]) -> dict[tuple[int, datetime], list]:
    """Add the batch's requests and cost per app key and hour to AppKeySpendHour; returns the sums."""
    hours = _aggregate_app_key_hours(stored)
    table = AppKeySpendHour._meta.db_table
    quoted = _qn(table)
    updates = ", ".join(f"{_qn(c)} = {quoted}.{_qn(c)} + excluded.{_qn(c)}" for c in _APP_KEY_SPEND_COLUMNS)
    tail = f"ON CONFLICT (app_key_id, bucket) DO UPDATE SET {updates}"  # identifiers from _meta # nosec B608
    rows = [[hour, app_key_id, *hours[(app_key_id, hour)]] for app_key_id, hour in sorted(hours)]
    _upsert(cursor, table, ("bucket", "app_key_id", *_APP_KEY_SPEND_COLUMNS), rows, tail)
    return hours


def _upsert_counters(cursor: CursorWrapper, table: str, buckets: dict[tuple, list]) -> None:
    """Add the batch's counters to the rollup rows, creating rows that do not exist yet."""
    quoted = _qn(table)
    updates = ", ".join(f"{_qn(c)} = {quoted}.{_qn(c)} + excluded.{_qn(c)}" for c in COUNTER_COLUMNS)
    conflict = "ON CONFLICT (bucket, COALESCE(upstream_key_id, 0), model)"
    tail = f"{conflict} DO UPDATE SET {updates}"  # identifiers from _meta # nosec B608
    rows = [[bucket, key_id or None, model, *buckets[(bucket, key_id, model)]]
            for bucket, key_id, model in sorted(buckets)]
    _upsert(cursor, table, _ROLLUP_COLUMNS, rows, tail)


def _upsert(cursor: CursorWrapper, table: str, columns: Sequence[str], rows: list[list], tail: str) -> list:
    """INSERT the rows with an ON CONFLICT tail; returns what a RETURNING clause in the tail returned."""
    if not rows:
        return []
    if connection.vendor == "postgresql":
        return _upsert_from_json(cursor, table, columns, rows, tail)
    returned = []
    for chunk in _chunks(rows, 500):
        params = [value for row in chunk for value in _adapted(row)]
        cursor.execute(_insert_sql(table, columns, len(chunk), tail), params)
        returned.extend(cursor.fetchall() if "RETURNING" in tail else [])
    return returned


def _upsert_from_json(
    cursor: CursorWrapper, table: str, columns: Sequence[str], rows: list[list], tail: str
) -> list:
    """Send the rows as one JSON parameter: psycopg quotes thousands of separate parameters slowly."""
    column_list = ", ".join(_qn(column) for column in columns)
    payload = json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str)
    source = f"json_populate_recordset(NULL::{_qn(table)}, %s)"
    sql = f"INSERT INTO {_qn(table)} ({column_list}) SELECT {column_list} FROM {source} {tail}"  # noqa: S608 (identifiers from _meta; values are parameters) # nosec B608
    cursor.execute(sql, [payload])
    return cursor.fetchall() if "RETURNING" in tail else []


# ---- outcome per upstream key ------------------------------------------------------------------------

# Calls Together bills (POST to these paths). Only their success shows that credits are back: a free call
# such as GET /models or /whoami succeeds with no credits at all, so it must not resolve a billing alert.
_BILLED_PATHS = (
    "/chat/completions", "/completions", "/embeddings", "/images/generations", "/rerank", "/audio/speech",
    "/audio/transcriptions", "/audio/translations", "/fine-tunes", "/batches",
)


def is_billed_call(method: str, endpoint: str) -> bool:
    return method.upper() == "POST" and endpoint.rstrip("/").endswith(_BILLED_PATHS)


def _tally_keys(stored: list[_Item]) -> dict[int | None, KeyOutcome]:
    """402s and successes of billed calls per upstream key, for the billing alert to act on."""
    keys: dict[int | None, KeyOutcome] = {}
    for item in stored:
        status, created_at, key_id = item.row[_STATUS], item.row[_CREATED], item.row[_KEY]
        outcome = keys.get(key_id)
        if outcome is None:
            outcome = keys[key_id] = KeyOutcome()
        if status == 402:
            outcome.payment_required += 1
            first = outcome.first_payment_required_at
            outcome.first_payment_required_at = created_at if first is None else min(first, created_at)
        elif (status is not None and status < 400 and not item.row[_CATEGORY]
              and is_billed_call(item.row[_METHOD], item.row[_ENDPOINT])):
            outcome.successes += 1
    return keys
