"""Delete request logs and minute rollups past their retention, in small batches.

Each batch is its own short transaction, so pruning tens of millions of rows never holds long locks
or one huge transaction; an interrupted run just leaves work for the next one. Hour rollups and
error groups are kept: charts beyond the retention window read hour rollups.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone

from together_dash.pollers.runs import PollReport, run_poller
from together_dash.traffic.models import RequestBodySample, RequestLog, UsageMinute

logger = logging.getLogger(__name__)

BATCH_SIZE = 10_000
# Its name in pollers/schedule.py: the periodic task's heartbeat, and the lease that keeps runs apart.
TASK_NAME = "prune_request_logs"


@dataclass(frozen=True, slots=True)
class PruneResult:
    """How many rows one prune run deleted, and the cut-offs it used."""

    request_logs: int
    minute_rollups: int
    body_samples: int
    logs_before: datetime
    minutes_before: datetime


def prune(now: datetime | None = None, batch_size: int = BATCH_SIZE) -> PruneResult:
    """Delete request logs older than REQUEST_LOG_RETENTION_DAYS and minute rollups older than theirs.

    Body samples go first, by the same cut-off: they are the only rows that point at request logs.
    """
    now = now or timezone.now()
    logs_before = now - timedelta(days=settings.REQUEST_LOG_RETENTION_DAYS)
    minutes_before = now - timedelta(days=settings.ROLLUP_MINUTE_RETENTION_DAYS)
    result = PruneResult(
        body_samples=delete_before(RequestBodySample, "created_at", logs_before, batch_size),
        request_logs=delete_before(RequestLog, "created_at", logs_before, batch_size),
        minute_rollups=delete_before(UsageMinute, "bucket", minutes_before, batch_size),
        logs_before=logs_before,
        minutes_before=minutes_before,
    )
    logger.info(
        "Pruned %d request logs (%d with body samples) and %d minute rollups",
        result.request_logs, result.body_samples, result.minute_rollups,
    )
    return result


def scheduled_prune(token: str | None = None, batch_size: int = BATCH_SIZE) -> PruneResult | None:
    """prune() under the periodic task's lease, recording its heartbeat; None if another run holds it."""
    results: list[PruneResult] = []

    def body(report: PollReport) -> None:
        results.append(prune(batch_size=batch_size))
        report.count("request_logs", results[0].request_logs)
        report.count("minute_rollups", results[0].minute_rollups)
        report.count("body_samples", results[0].body_samples)

    run_poller(TASK_NAME, body, token)
    return results[0] if results else None


def delete_before(model: type[models.Model], column: str, cutoff: datetime, batch_size: int) -> int:
    """Delete rows whose column is before the cutoff, oldest first, one batch per transaction."""
    deleted = 0
    while True:
        count = _delete_batch(model, column, cutoff, batch_size)
        deleted += count
        if count < batch_size:
            return deleted


def _delete_batch(model: type[models.Model], column: str, cutoff: datetime, batch_size: int) -> int:
    """One batch: the ids come from the time index, so each batch reads only the rows it deletes.

    A raw DELETE: nothing references these rows (body samples are deleted before their logs), and the
    ORM's delete() would first load every row to run cascades and signals that do not exist here.
    """
    table = connection.ops.quote_name(model._meta.db_table)
    column = connection.ops.quote_name(column)
    sql = (
        f"DELETE FROM {table} WHERE id IN "  # noqa: S608 (identifiers from _meta; the values are parameters) # nosec B608
        f"(SELECT id FROM {table} WHERE {column} < %s ORDER BY {column} LIMIT %s)"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [connection.ops.adapt_datetimefield_value(cutoff), batch_size])
        return cursor.rowcount
