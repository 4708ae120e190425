"""Enforced app-key budgets at the proxy: over the amount, the app key gets a 429 until the period resets.

The decision stays local, with no database query and no cache round trip on the request path: a
background thread reads the enforced budgets from the database every RELOAD_SECONDS, reads their spend
counters (budgets/counters.py, shared by every process through the cache) every SYNC_SECONDS in one
round trip, seeds a missing counter from the app key's hour rollups, and reseeds every counter from
them every RECONCILE_SECONDS; the request path only looks up which app keys are over. So a key is
stopped within about a second of the batch that took it over its amount being recorded (the
requests in flight meanwhile still go through), by every proxy process alike, and a restart of the
proxy or of the cache forgets nothing.

When the database or the cache is unreachable the guard goes on with what it last knew, and logs it.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db import Error as DatabaseError
from django.db import connection

from together_dash.proxy.background import Repeating

logger = logging.getLogger(__name__)

SYNC_SECONDS = 1.0
RELOAD_SECONDS = 5.0
RECONCILE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class EnforcedBudget:
    """What the proxy needs of one enforced app-key budget (no secret)."""

    budget_id: int
    name: str
    app_key_id: int
    app_key_name: str
    period: str
    amount_usd: Decimal


@dataclass(frozen=True, slots=True)
class OverBudget:
    """An app key over one of its enforced budgets, until resets_at."""

    budget: EnforcedBudget
    spent_usd: Decimal
    period_start: datetime
    resets_at: datetime


def load_enforced_budgets() -> list[EnforcedBudget]:
    """Every enforced app-key budget, in one query (in the guard's thread)."""
    from together_dash.budgets.models import Budget

    rows = Budget.objects.filter(enforce=True, scope=Budget.Scope.APP_KEY, app_key__isnull=False)
    return [
        EnforcedBudget(b.pk, b.name, b.app_key_id, b.app_key.name, b.period, b.amount_usd)
        for b in rows.select_related("app_key").order_by("pk")
    ]


def rollup_spend(app_key_id: int, start: datetime, end: datetime) -> Decimal:
    from together_dash.budgets.spend import app_key_spend

    return app_key_spend(app_key_id, start, end).cost_usd


def _utc_now() -> datetime:
    return datetime.now(UTC)


class BudgetGuard:
    """Which app keys are over an enforced budget, refreshed in the background from the shared counters."""

    def __init__(
        self,
        load: Callable[[], list[EnforcedBudget]] = load_enforced_budgets,
        spend_from_rollups: Callable[[int, datetime, datetime], Decimal] = rollup_spend,
        now: Callable[[], datetime] = _utc_now,
        reload_seconds: float = RELOAD_SECONDS,
        reconcile_seconds: float = RECONCILE_SECONDS,
    ) -> None:
        self.load = load
        self.spend_from_rollups = spend_from_rollups
        self.now = now
        self.reload_seconds = reload_seconds
        self.reconcile_seconds = reconcile_seconds
        self._budgets: list[EnforcedBudget] = []
        self._over: dict[int, OverBudget] = {}
        self._loaded_at: float | None = None
        self._reconciled_at: float | None = None
        self._sync_lock = threading.Lock()
        # The thread's own database connection is closed when it ends: Django never would.
        self._syncing = Repeating("proxy-budgets", self.sync, at_once=True, on_exit=_close_connection)
        self._failing = False

    def check(self, app_key_id: int) -> OverBudget | None:
        """The budget the app key is over now, or None; a dictionary look-up, no I/O."""
        over = self._over.get(app_key_id)
        if over is None or over.resets_at <= self.now():
            return None  # a period that ended between two syncs no longer stops the key
        return over

    def sync(self) -> None:
        """Reload the budgets when due, read (or seed) their counters, and decide which keys are over."""
        from together_dash.budgets import counters

        with self._sync_lock:
            try:
                self._reload_if_due()
                now = self.now()
                reconcile = self._due(self._reconciled_at, self.reconcile_seconds)
                watched = [(budget, *_bounds(budget, now)) for budget in self._budgets]
                names = {b.budget_id: counters.counter_name(b.app_key_id, b.period, s) for b, s, _ in watched}
                known = counters.read(names.values())
                over: dict[int, OverBudget] = {}
                for budget, start, resets_at in watched:
                    name = names[budget.budget_id]
                    units = known.get(name)
                    if units is None or reconcile:
                        spent = self.spend_from_rollups(budget.app_key_id, start, resets_at)
                        units = counters.to_units(spent)
                        counters.seed(name, units, counters.timeout_for(resets_at, now))
                    spent = counters.from_units(units)
                    if spent >= budget.amount_usd and budget.app_key_id not in over:
                        over[budget.app_key_id] = OverBudget(budget, spent, start, resets_at)
                if reconcile:
                    self._reconciled_at = time.monotonic()
                self._over = over
            except Exception as exc:  # noqa: BLE001 - the proxy keeps serving on what it last knew
                self._note_failure(exc)
                return
        self._failing = False

    def _due(self, last: float | None, every: float) -> bool:
        return last is None or time.monotonic() - last >= every

    def _reload_if_due(self) -> None:
        from together_dash.budgets import counters

        if not self._due(self._loaded_at, self.reload_seconds):
            return
        try:
            self._budgets = self.load()
        except DatabaseError:
            connection.close()  # this thread serves no request: Django would never replace it
            raise
        self._loaded_at = time.monotonic()
        counters.publish_enforced(budget.app_key_id for budget in self._budgets)

    def _note_failure(self, exc: Exception) -> None:
        if not self._failing:
            logger.warning("Budget enforcement goes on with what it last knew until the database and cache "
                           "answer again (%s)", type(exc).__name__)
        self._failing = True

    def start(self, every: float = SYNC_SECONDS) -> None:
        self._syncing.start(every)

    def stop(self) -> None:
        self._syncing.stop()


def _close_connection() -> None:
    """This thread's connection (`connection.close` looked up elsewhere would be another thread's)."""
    connection.close()


def _bounds(budget: EnforcedBudget, now: datetime) -> tuple[datetime, datetime]:
    from together_dash.budgets.models import period_bounds

    return period_bounds(budget.period, now)
