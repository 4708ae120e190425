"""Error groups and rollups for request logs loaded in bulk (COPY), counted with set-based SQL.

The twin of recording.record_entries() for rows that went into RequestLog without it (the demo
generator's PostgreSQL path): the same counters, buckets and group rules, so either way of loading a row
leaves the same error groups and minute, hour and day rollups. PostgreSQL only.
"""
from __future__ import annotations

from datetime import datetime

from django.db import connection
from django.db.backends.utils import CursorWrapper

from together_dash.traffic.models import (
    COUNTER_COLUMNS,
    ERROR_COLUMNS,
    LATENCY_BOUNDS_MS,
    ErrorGroup,
    RequestLog,
    UsageDay,
    UsageHour,
    UsageMinute,
    UsageRollup,
)

# The rollup model of a log row: the model requested, else the one served (recording.group_identity).
_MODEL_SQL = "COALESCE(NULLIF(model_requested, ''), model_served)"
# The model a row is priced by: the one served, else the one requested (recording._cost).
_PRICED_BY_SQL = "COALESCE(NULLIF(model_served, ''), model_requested)"


def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


def count_groups(cursor: CursorWrapper, after_id: int) -> None:
    """Add the loaded error rows to their groups, as record_entries() would: count, span, newest message.

    The rows must already carry their group's id (a group new to the load starts with count 0).
    """
    logs, groups = _qn(RequestLog._meta.db_table), _qn(ErrorGroup._meta.db_table)
    newer = "c.last_seen >= g.last_seen"
    recurs = "g.state = 'resolved' AND (g.resolved_at IS NULL OR c.last_seen > g.resolved_at)"
    cursor.execute(
        f"""
        WITH counted AS (
            SELECT error_group_id AS id, COUNT(*) AS n,
                   MIN(created_at) AS first_seen, MAX(created_at) AS last_seen
            FROM {logs} WHERE id > %(after)s AND error_group_id IS NOT NULL GROUP BY error_group_id
        ), newest AS (
            SELECT DISTINCT ON (error_group_id) error_group_id AS id, error_message, status_code
            FROM {logs} WHERE id > %(after)s AND error_group_id IS NOT NULL
            ORDER BY error_group_id, created_at DESC, id DESC
        )
        UPDATE {groups} g SET
            count = g.count + c.n,
            first_seen = LEAST(g.first_seen, c.first_seen),
            last_message = CASE WHEN {newer} THEN newest.error_message ELSE g.last_message END,
            last_status = CASE WHEN {newer} THEN newest.status_code ELSE g.last_status END,
            last_seen = GREATEST(g.last_seen, c.last_seen),
            state = CASE WHEN {recurs} THEN 'open' ELSE g.state END,
            resolved_at = CASE WHEN {recurs} THEN NULL ELSE g.resolved_at END
        FROM counted c JOIN newest USING (id)
        WHERE g.id = c.id
        """,  # noqa: S608 (identifiers from _meta; values are parameters) # nosec B608
        {"after": after_id},
    )


def build_rollups(cursor: CursorWrapper, after_id: int, minutes_since: datetime) -> None:
    """Add the rows after after_id to day and hour rollups, and to minute rollups from minutes_since on."""
    _rollup(cursor, UsageMinute, "minute", after_id, minutes_since)
    _rollup(cursor, UsageHour, "hour", after_id, None)
    _rollup(cursor, UsageDay, "day", after_id, None)


def _rollup(
    cursor: CursorWrapper, model: type[UsageRollup], step: str, after_id: int, since: datetime | None
) -> None:
    quoted = _qn(model._meta.db_table)
    columns = ", ".join(_qn(column) for column in ("bucket", "upstream_key_id", "model", *COUNTER_COLUMNS))
    adds = ", ".join(f"{_qn(c)} = {quoted}.{_qn(c)} + excluded.{_qn(c)}" for c in COUNTER_COLUMNS)
    window = "AND created_at >= %(since)s" if since is not None else ""
    counters = ", ".join(_counter_sql())
    # Buckets in UTC whatever the session time zone, like recording.py's datetime.replace().
    cursor.execute(
        f"""
        INSERT INTO {quoted} ({columns})
        SELECT date_trunc('{step}', created_at, 'UTC'), upstream_key_id, {_MODEL_SQL}, {counters}
        FROM {_qn(RequestLog._meta.db_table)}
        WHERE id > %(after)s {window}
        GROUP BY 1, 2, 3
        ON CONFLICT (bucket, COALESCE(upstream_key_id, 0), model) DO UPDATE SET {adds}
        """,  # noqa: S608 (identifiers from _meta and fixed SQL; values are parameters) # nosec B608
        {"after": after_id, "since": since},
    )


def _counter_sql() -> list[str]:
    """One aggregate per rollup counter (COUNTER_COLUMNS order), with recording.py's rules."""
    known = "latency_ms >= 0 AND latency_ms < 'Infinity'"
    by_column = {"requests": "COUNT(*)"}
    for category, column in ERROR_COLUMNS.items():
        by_column[column] = f"COUNT(*) FILTER (WHERE category = '{category}')"
    for column in ("prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"):
        by_column[column] = f"COALESCE(SUM({column}), 0)"
    # models.is_unpriced in SQL: token counts known, cost not, and a model to price by.
    by_column["unpriced_requests"] = (
        "COUNT(*) FILTER (WHERE cost_usd IS NULL AND prompt_tokens IS NOT NULL"
        f" AND completion_tokens IS NOT NULL AND {_PRICED_BY_SQL} <> '')"
    )
    by_column["latency_sum_ms"] = f"COALESCE(SUM(latency_ms) FILTER (WHERE {known}), 0)"
    by_column["latency_count"] = f"COUNT(*) FILTER (WHERE {known})"
    lower = None
    for bound in LATENCY_BOUNDS_MS:
        above = f" AND latency_ms > {lower}" if lower is not None else ""
        by_column[f"latency_le_{bound}"] = f"COUNT(*) FILTER (WHERE {known}{above} AND latency_ms <= {bound})"
        lower = bound
    by_column["latency_gt_10000"] = f"COUNT(*) FILTER (WHERE {known} AND latency_ms > {lower})"
    return [by_column[column] for column in COUNTER_COLUMNS]
