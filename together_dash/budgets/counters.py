"""The app keys' spend per period in the shared cache, which the proxy enforces budgets with.

Every process that records requests (proxy processes, the ingest API) adds each committed batch's
cost per app key with an enforced budget (the set the proxies' guards publish) to two counters in the
cache (Redis with CACHE_URL): the key's UTC day and its UTC month. Amounts are whole units of
10^-8 USD, the request log's precision, so INCR stays exact.
A counter that is missing (a new period, a restarted cache) is not created by an increment: the
proxy's budget guard seeds it from the app key's hour rollups, and reseeds every counter it watches
from them now and then, so the counters never drift far from what the database holds.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.cache import cache

from together_dash.budgets.models import Budget, period_bounds

logger = logging.getLogger(__name__)

UNIT = Decimal("0.00000001")
# A counter outlives its period by a day: late batches and late syncs still find it.
GRACE = timedelta(days=1)
PERIODS = (Budget.Period.DAY, Budget.Period.MONTH)
# The app keys with an enforced budget, as the proxies' guards last loaded them: a recorder touches the
# counters of these only (one cache read per batch, and none of the others' counters).
ENFORCED_NAME = "together-dash:app-keys-with-enforced-budgets"
ENFORCED_TIMEOUT = 300


def to_units(amount: Decimal) -> int:
    return int((amount / UNIT).to_integral_value())


def from_units(units: int) -> Decimal:
    return (Decimal(units) * UNIT).quantize(UNIT)


def counter_name(app_key_id: int, period: str, start: datetime) -> str:
    return f"together-dash:app-key-spend:{app_key_id}:{period}:{start:%Y-%m-%d}"


def timeout_for(resets_at: datetime, now: datetime) -> int:
    return max(60, int((resets_at + GRACE - now).total_seconds()))


def publish_enforced(app_key_ids: Iterable[int]) -> None:
    cache.set(ENFORCED_NAME, sorted(set(app_key_ids)), timeout=ENFORCED_TIMEOUT)


def add_spend(spend: dict[tuple[int, datetime], Decimal]) -> None:
    """Add recorded cost per (app key, hour) to the day and month counters of enforced app keys."""
    enforced = set(cache.get(ENFORCED_NAME) or ())
    deltas: dict[str, int] = {}
    for (app_key_id, hour), cost in spend.items():
        if app_key_id not in enforced:
            continue
        for period in PERIODS:
            name = counter_name(app_key_id, period, period_bounds(period, hour)[0])
            deltas[name] = deltas.get(name, 0) + to_units(cost)
    for name, delta in sorted(deltas.items()):
        if not delta:
            continue
        try:
            cache.incr(name, delta)
        except ValueError:
            continue  # not seeded yet: the guard seeds it from the rollups, this batch included


def on_batch_recorded(sender: Any, result: Any, **kwargs: Any) -> None:
    """The receiver of traffic's batch_recorded signal; a cache outage never fails recording."""
    spend = getattr(result, "app_key_spend", None)
    if not spend:
        return
    try:
        add_spend(spend)
    except Exception as exc:  # noqa: BLE001 - the guard reseeds from the rollups
        logger.warning("Could not add recorded spend to the shared budget counters (%s)", type(exc).__name__)


def read(names: Iterable[str]) -> dict[str, int]:
    """The counters that exist, by name, in one round trip."""
    return {name: int(value) for name, value in cache.get_many(list(names)).items()}


def seed(name: str, units: int, timeout: int) -> None:
    """Set a counter to what the rollups say (the database is the truth, the counter its fast copy)."""
    cache.set(name, units, timeout=timeout)
