"""Budget math: each scope reads its own spend in the UTC day or month; unpriced spend is a lower bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError

from tests.budgets.conftest import OTHER, PRICED, UNPRICED, app_key, spend, upstream
from together_dash.budgets.models import Budget, clean_thresholds, period_bounds
from together_dash.budgets.spend import budget_status
from together_dash.catalog.models import ModelInfo
from together_dash.catalog.pricing import invalidate_prices
from together_dash.traffic.backfill import backfill_costs
from together_dash.traffic.models import AppKeySpendHour

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 3, 15, 12, 30, tzinfo=UTC)


def budget(scope: str, period: str = "month", amount: str = "10", **target: object) -> Budget:
    made = Budget(name=f"{scope}-{period}-{Budget.objects.count()}", scope=scope, period=period,
                  amount_usd=Decimal(amount), **target)
    made.full_clean()
    made.save()
    return made


def test_periods_are_utc_days_and_months_and_reset_at_their_end() -> None:
    assert period_bounds("day", NOW) == (datetime(2026, 3, 15, tzinfo=UTC), datetime(2026, 3, 16, tzinfo=UTC))
    assert period_bounds("month", NOW) == (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    december = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_bounds("month", december)[1] == datetime(2027, 1, 1, tzinfo=UTC)


@time_machine.travel(NOW, tick=False)
def test_each_scope_counts_only_its_own_spend_in_the_period(catalog: None) -> None:
    prod, batch = upstream("prod", project="search"), upstream("batch", project="search")
    other_project = upstream("lab", project="research")
    web, worker = app_key("web", prod), app_key("worker", prod)
    spend("1.25", key=prod, app=web)
    spend("0.50", key=prod, app=worker, model=OTHER)
    spend("2.00", key=batch)
    spend("4.00", key=other_project)
    spend("8.00", key=prod, app=web, at=NOW - timedelta(days=20))  # last month

    assert budget_status(budget("app_key", app_key=web)).spend.cost_usd == Decimal("1.25")
    assert budget_status(budget("upstream_key", upstream_key=prod)).spend.cost_usd == Decimal("1.75")
    assert budget_status(budget("model", model=OTHER)).spend.cost_usd == Decimal("0.50")
    assert budget_status(budget("model", model=PRICED)).spend.cost_usd == Decimal("7.25")
    assert budget_status(budget("project", project="search")).spend.cost_usd == Decimal("3.75")


@time_machine.travel(NOW, tick=False)
def test_a_day_budget_counts_from_utc_midnight_and_a_month_budget_from_the_first(catalog: None) -> None:
    key = upstream("prod")
    web = app_key("web", key)
    spend("1.00", key=key, app=web, at=datetime(2026, 3, 14, 23, 59, tzinfo=UTC))  # yesterday
    spend("2.00", key=key, app=web, at=datetime(2026, 3, 15, 0, 0, tzinfo=UTC))
    spend("4.00", key=key, app=web, at=datetime(2026, 3, 15, 12, 29, tzinfo=UTC))
    spend("16.00", key=key, app=web, at=datetime(2026, 2, 28, 23, 59, tzinfo=UTC))  # last month

    day = budget_status(budget("app_key", "day", amount="8", app_key=web))
    month = budget_status(budget("app_key", "month", amount="8", app_key=web))
    assert (day.spend.cost_usd, day.spend.requests) == (Decimal("6.00"), 2)
    assert day.resets_at == datetime(2026, 3, 16, tzinfo=UTC)
    assert month.spend.cost_usd == Decimal("7.00")
    assert month.percent == Decimal("87.5") and month.reached == [80] and not month.is_over
    day_upstream = budget_status(budget("upstream_key", "day", amount="6", upstream_key=key))
    assert day_upstream.spend.cost_usd == Decimal("6.00") and day_upstream.reached == [80, 100]
    assert day_upstream.is_over


@time_machine.travel(NOW, tick=False)
def test_unpriced_requests_make_the_spend_a_lower_bound_never_zero(catalog: None) -> None:
    key = upstream("prod")
    web = app_key("web", key)
    spend("3.00", key=key, app=web, model=UNPRICED)
    spend("3.00", key=key, app=web, model=UNPRICED)

    for status in (budget_status(budget("app_key", app_key=web)),
                   budget_status(budget("upstream_key", upstream_key=key))):
        assert status.spend.cost_usd == 0
        assert status.spend.unpriced_requests == 2 and status.spend.is_lower_bound

    ModelInfo.objects.create(model_id=UNPRICED, pricing_input=Decimal("1"), pricing_output=Decimal("2"))
    invalidate_prices()
    backfill_costs(now=NOW)

    after = budget_status(Budget.objects.get(scope="app_key"))
    assert (after.spend.cost_usd, after.spend.unpriced_requests) == (Decimal("6.00"), 0)
    assert not after.spend.is_lower_bound


@time_machine.travel(NOW, tick=False)
def test_the_app_key_rollup_adds_up_per_hour_and_the_batch_reports_it(catalog: None) -> None:
    key = upstream("prod")
    web = app_key("web", key)
    result = spend("0.000012", key=key, app=web)
    spend("1", key=key)  # no app key: not in the app keys' rollup

    assert result.app_key_spend == {(web.pk, datetime(2026, 3, 15, 12, tzinfo=UTC)): Decimal("0.000012")}
    row = AppKeySpendHour.objects.get()
    assert (row.app_key_id, row.requests, row.cost_usd) == (web.pk, 1, Decimal("0.000012"))


def test_thresholds_are_whole_percentages_sorted_once_each() -> None:
    assert clean_thresholds("100, 80%, 80") == [80, 100]
    for bad in ("", "eighty", "0", "1001", []):
        with pytest.raises(ValidationError):
            clean_thresholds(bad)


def test_a_budget_covers_exactly_one_thing_and_only_app_key_budgets_are_enforced(catalog: None) -> None:
    key = upstream("prod")
    with pytest.raises(ValidationError) as missing:
        Budget(name="b", scope="app_key", amount_usd=Decimal("5")).full_clean()
    assert "app_key" in missing.value.error_dict
    with pytest.raises(ValidationError) as enforced:
        Budget(name="b", scope="upstream_key", upstream_key=key, amount_usd=Decimal("5"),
               enforce=True).full_clean()
    assert "enforce" in enforced.value.error_dict
    with pytest.raises(ValidationError):
        Budget(name="b", scope="model", model=PRICED, amount_usd=Decimal("0")).full_clean()
    mixed = Budget(name="b", scope="model", model=f" {PRICED} ", upstream_key=key, amount_usd=Decimal("5"))
    mixed.full_clean()
    assert (mixed.model, mixed.upstream_key) == (PRICED, None)
