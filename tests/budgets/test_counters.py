"""The shared spend counters: recorders add to the enforced app keys' counters only; the guard seeds them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.core.cache import cache

from tests.budgets.conftest import app_key, spend, upstream
from together_dash.budgets import counters
from together_dash.budgets.models import Budget
from together_dash.proxy.budgets import BudgetGuard

pytestmark = pytest.mark.django_db(transaction=True)  # the counters follow committed batches only
NOW = datetime(2026, 9, 9, 9, 9, tzinfo=UTC)


@time_machine.travel(NOW, tick=False)
def test_recorded_cost_lands_in_the_watched_counters_of_enforced_app_keys_only(catalog: None) -> None:
    key = upstream("prod")
    capped, loose = app_key("capped", key), app_key("loose", key)
    Budget.objects.create(name="capped", scope="app_key", app_key=capped, amount_usd=Decimal("50"),
                          enforce=True)
    Budget.objects.create(name="loose", scope="app_key", app_key=loose, amount_usd=Decimal("50"))
    spend("1.50", key=key, app=capped)  # before any guard: only the rollups know
    guard = BudgetGuard(reload_seconds=0)
    guard.sync()

    spend("0.25", key=key, app=capped)
    spend("9", key=key, app=loose)

    day = counters.counter_name(capped.pk, "day", datetime(2026, 9, 9, tzinfo=UTC))
    month = counters.counter_name(capped.pk, "month", datetime(2026, 9, 1, tzinfo=UTC))
    assert counters.from_units(cache.get(month)) == Decimal("1.75")  # seeded 1.50, then the batch's 0.25
    assert cache.get(day) is None  # no day budget watches it
    assert cache.get(counters.counter_name(loose.pk, "month", datetime(2026, 9, 1, tzinfo=UTC))) is None
    assert cache.get(counters.ENFORCED_NAME) == [capped.pk]


@time_machine.travel(NOW, tick=False)
def test_a_drifted_counter_is_put_right_from_the_rollups_at_the_next_reconciliation(catalog: None) -> None:
    key = upstream("prod")
    capped = app_key("capped", key)
    Budget.objects.create(name="capped", scope="app_key", app_key=capped, amount_usd=Decimal("1"),
                          enforce=True)
    guard = BudgetGuard(reload_seconds=0, reconcile_seconds=0)
    guard.sync()
    name = counters.counter_name(capped.pk, "month", datetime(2026, 9, 1, tzinfo=UTC))
    cache.set(name, counters.to_units(Decimal("5")))  # a lost or doubled increment
    spend("0.40", key=key, app=capped)

    guard.sync()

    assert counters.from_units(cache.get(name)) == Decimal("0.40")
    assert guard.check(capped.pk) is None
