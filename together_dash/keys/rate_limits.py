"""poll_rate_limits: a free probe per key plus the latest proxied headers per (key, model), as snapshots."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from together_dash.keys.models import RateLimitSnapshot, TogetherKey
from together_dash.pollers.fanout import FanOutConfig, KeyOutcome, KeyRef, fan_out, key_refs
from together_dash.pollers.runs import PollReport, active_keys, keys_due, record_outcomes, run_poller
from together_dash.together.client import AsyncTogetherClient
from together_dash.together.ratelimits import RateLimitInfo
from together_dash.traffic.models import RequestLog

POLLER = "poll_rate_limits"
# Proxied rows are read back this far: comfortably more than the poll interval, bounded for the query.
PROXY_LOOKBACK = timedelta(minutes=15)
PROXY_ROWS_PER_KEY = 500
PRUNE_BATCH = 10_000


def poll_rate_limits(token: str | None = None, config: FanOutConfig | None = None) -> PollReport:
    """Snapshot every active key's rate limits."""
    return run_poller(POLLER, lambda report: _poll(report, config), token)


def _poll(report: PollReport, config: FanOutConfig | None) -> None:
    now = timezone.now()
    keys = active_keys()
    due, report.skipped = keys_due(POLLER, keys, now)
    refs, broken = key_refs(due)
    outcomes = broken + fan_out(refs, _probe, config)
    record_outcomes(POLLER, outcomes, report)
    snapshots = probe_snapshots(outcomes, now) + proxy_snapshots(keys, now)
    RateLimitSnapshot.objects.bulk_create(snapshots, ignore_conflicts=True)
    report.count("snapshots", len(snapshots))
    report.count("pruned", prune_snapshots(now))


async def _probe(client: AsyncTogetherClient, key: KeyRef) -> RateLimitInfo:
    """GET /models costs nothing; whether Together sends rate-limit headers on it varies (reference §4.1)."""
    return (await client.list_models()).ratelimit


def probe_snapshots(outcomes: Iterable[KeyOutcome[RateLimitInfo]], now: datetime) -> list[RateLimitSnapshot]:
    snapshots = []
    for outcome in outcomes:
        # A 429 on the probe is itself a telling snapshot: nothing left until the reset.
        info = outcome.value if outcome.ok else outcome.ratelimit
        if info is not None and not info.is_empty:
            snapshots.append(snapshot_from(outcome.key.id, "", now, RateLimitSnapshot.Source.PROBE, info))
    return snapshots


def snapshot_from(
    key_id: int, model: str, at: datetime, source: str, info: RateLimitInfo
) -> RateLimitSnapshot:
    """A snapshot row from parsed headers; headroom is the tighter of requests and tokens."""
    headrooms = [h for h in (info.request_headroom_percent, info.token_headroom_percent) if h is not None]
    return RateLimitSnapshot(
        key_id=key_id,
        model=model[:255],
        taken_at=at,
        source=source,
        request_limit=info.request_limit,
        request_remaining=info.request_remaining,
        reset_seconds=info.reset_seconds,
        token_limit=info.token_limit,
        token_remaining=info.token_remaining,
        request_limit_dynamic=info.request_limit_dynamic,
        request_remaining_dynamic=info.request_remaining_dynamic,
        token_limit_dynamic=info.token_limit_dynamic,
        token_remaining_dynamic=info.token_remaining_dynamic,
        headroom_pct=min(headrooms) if headrooms else None,
    )


def proxy_snapshots(keys: Iterable[TogetherKey], now: datetime) -> list[RateLimitSnapshot]:
    """The latest proxied rate-limit headers per (key, model), from recent request logs only."""
    snapshots = []
    for key in keys:
        latest: dict[str, dict[str, Any]] = {}
        for row in _recent_rows_with_limits(key.id, now):
            latest.setdefault(row["model_requested"], row)
        snapshots += [_proxy_snapshot(key.id, model, row) for model, row in latest.items()]
    return snapshots


def _recent_rows_with_limits(key_id: int, now: datetime) -> list[dict[str, Any]]:
    # Bounded: one key, a short window, newest first, capped (index reqlog on upstream_key, created_at).
    has_limits = Q(ratelimit_limit__isnull=False) | Q(tokenlimit_limit__isnull=False)
    return list(
        RequestLog.objects.filter(upstream_key_id=key_id, created_at__gte=now - PROXY_LOOKBACK)
        .filter(has_limits)
        .order_by("-created_at", "-id")
        .values(
            "created_at", "model_requested", "ratelimit_limit", "ratelimit_remaining", "ratelimit_reset",
            "tokenlimit_limit", "tokenlimit_remaining",
        )[:PROXY_ROWS_PER_KEY]
    )


def _proxy_snapshot(key_id: int, model: str, row: dict[str, Any]) -> RateLimitSnapshot:
    info = RateLimitInfo(
        request_limit=row["ratelimit_limit"],
        request_remaining=row["ratelimit_remaining"],
        reset_seconds=row["ratelimit_reset"],
        token_limit=row["tokenlimit_limit"],
        token_remaining=row["tokenlimit_remaining"],
    )
    return snapshot_from(key_id, model, row["created_at"], RateLimitSnapshot.Source.PROXY, info)


def prune_snapshots(now: datetime) -> int:
    """Delete snapshots past the retention, a bounded batch per run."""
    cutoff = now - timedelta(days=settings.RATE_LIMIT_SNAPSHOT_RETENTION_DAYS)
    expired = RateLimitSnapshot.objects.filter(taken_at__lt=cutoff).values_list("id", flat=True)
    ids = list(expired[:PRUNE_BATCH])
    if not ids:
        return 0
    return RateLimitSnapshot.objects.filter(id__in=ids).delete()[0]
