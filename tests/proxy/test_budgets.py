"""Enforced app-key budgets through the real proxy: a clear 429 once the budget is spent, for that key only,
counted across proxy instances through the shared cache and remembered across restarts from the rollups."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import openai
import pytest
import time_machine
from django.core.cache import cache

from tests.proxy.test_auth import MESSAGES, MODEL, chat, wait_for_status
from together_dash.budgets import counters
from together_dash.budgets.models import Budget
from together_dash.catalog.models import ModelInfo
from together_dash.catalog.pricing import invalidate_prices
from together_dash.keys.models import AppKey, TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.proxy.budgets import BudgetGuard
from together_dash.proxy.testing import RunningProxy, running_proxy
from together_dash.simulator.testing import RunningSimulator
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.models import AppKeySpendHour, RequestLog
from together_dash.traffic.recording import record_entries

pytestmark = pytest.mark.django_db(transaction=True)
TINY = Decimal("0.000001")  # less than any request with tokens costs at $1 / $2 per million


@pytest.fixture
def priced(transactional_db: None) -> None:
    ModelInfo.objects.create(model_id=MODEL, pricing_input=Decimal("1"), pricing_output=Decimal("2"))
    invalidate_prices()
    yield
    invalidate_prices()


@pytest.fixture
def keys(priced: None) -> dict[str, tuple[AppKey, str]]:
    TogetherKey.create(name="main", secret="sim-upstream-key-for-budget-tests")
    return {name: create_app_key(name) for name in ("capped", "free")}


@pytest.fixture
def two_proxies(fresh_simulator: RunningSimulator) -> Iterator[tuple[RunningProxy, RunningProxy]]:
    """Two proxies, as two processes would be: their own memory, one database, one cache."""
    with running_proxy(fresh_simulator.base_url) as first, running_proxy(fresh_simulator.base_url) as second:
        yield first, second


def enforced(app_key: AppKey, amount: Decimal = TINY, period: str = "day") -> Budget:
    return Budget.objects.create(
        name=f"{app_key.name}-{period}", scope="app_key", app_key=app_key, period=period, amount_usd=amount,
        enforce=True,
    )


def counted_cost(app_key: AppKey) -> Decimal:
    return sum((row.cost_usd for row in AppKeySpendHour.objects.filter(app_key=app_key)), Decimal(0))


def test_an_app_key_over_its_enforced_budget_gets_a_clear_429_from_every_proxy_and_others_go_on(
    keys: dict[str, tuple[AppKey, str]], two_proxies: tuple[RunningProxy, RunningProxy]
) -> None:
    first, second = two_proxies
    (capped, capped_secret), (_, free_secret) = keys["capped"], keys["free"]
    budget = enforced(capped)
    first.proxy.budgets.sync()
    second.proxy.budgets.sync()  # both seed the shared counter: nothing spent yet

    assert chat(first, capped_secret).status_code == 200  # under budget: forwarded
    assert first.proxy.drain_logs()
    spent = counted_cost(capped)
    assert spent > TINY
    # The recorder added the batch's cost to the shared counter; the other proxy reads it there.
    start = budget.period_bounds()[0]
    name = counters.counter_name(capped.pk, "day", start)
    assert counters.from_units(cache.get(name)) == spent
    second.proxy.budgets.sync()

    refused = chat(second, capped_secret)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == ("budget_exceeded", "budget_exceeded", None)
    midnight = start + timedelta(days=1)
    assert f"over its budget '{budget.name}'" in error["message"]
    assert f"resets at {midnight:%Y-%m-%d} 00:00 UTC" in error["message"]
    assert 0 < int(refused.headers["retry-after"]) <= 86_400
    assert refused.headers["x-should-retry"] == "false"
    assert capped_secret.split("_", 2)[-1] not in refused.text

    assert chat(second, free_secret).status_code == 200  # another app key is not affected
    first.proxy.budgets.sync()
    assert chat(first, capped_secret).status_code == 429  # the first proxy stops it too
    assert first.proxy.drain_logs() and second.proxy.drain_logs()
    assert counted_cost(capped) == spent  # refusals cost nothing
    logged = RequestLog.objects.filter(app_key=capped, status_code=429)
    assert logged.count() == 2 and all(log.category == "rate_limit" for log in logged)


def test_the_openai_sdk_gets_a_rate_limit_error_at_once_and_does_not_retry(
    keys: dict[str, tuple[AppKey, str]], two_proxies: tuple[RunningProxy, RunningProxy]
) -> None:
    first, _ = two_proxies
    capped, capped_secret = keys["capped"]
    enforced(capped)
    assert chat(first, capped_secret).status_code == 200
    assert first.proxy.drain_logs()
    first.proxy.budgets.sync()

    client = openai.OpenAI(base_url=first.base_url, api_key=capped_secret, max_retries=2)
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert raised.value.code == "budget_exceeded"
    assert first.proxy.drain_logs()
    assert RequestLog.objects.filter(app_key=capped, status_code=429).count() == 1  # x-should-retry: false


def test_a_restarted_proxy_with_an_emptied_cache_remembers_the_spend_from_the_rollups(
    keys: dict[str, tuple[AppKey, str]], fresh_simulator: RunningSimulator
) -> None:
    capped, capped_secret = keys["capped"]
    enforced(capped)
    with running_proxy(fresh_simulator.base_url) as before:
        assert chat(before, capped_secret).status_code == 200
    cache.clear()  # Redis restarted too

    with running_proxy(fresh_simulator.base_url) as after:
        after.proxy.budgets.sync()
        assert chat(after, capped_secret).status_code == 429


def test_a_budget_raised_or_not_enforced_lets_the_key_through_again(
    keys: dict[str, tuple[AppKey, str]], two_proxies: tuple[RunningProxy, RunningProxy]
) -> None:
    first, _ = two_proxies
    capped, capped_secret = keys["capped"]
    budget = enforced(capped)
    assert chat(first, capped_secret).status_code == 200
    assert first.proxy.drain_logs()
    first.proxy.budgets.sync()
    assert chat(first, capped_secret).status_code == 429

    Budget.objects.filter(pk=budget.pk).update(amount_usd=Decimal("100"))
    fresh = BudgetGuard(reload_seconds=0)
    fresh.sync()
    assert fresh.check(capped.pk) is None
    Budget.objects.filter(pk=budget.pk).update(amount_usd=TINY, enforce=False)
    fresh.sync()
    assert fresh.check(capped.pk) is None


def test_the_proxys_own_sync_thread_stops_the_key_without_help(
    keys: dict[str, tuple[AppKey, str]], fresh_simulator: RunningSimulator
) -> None:
    capped, capped_secret = keys["capped"]
    enforced(capped)
    with running_proxy(fresh_simulator.base_url, budget_sync_seconds=0.1) as running:
        assert chat(running, capped_secret).status_code == 200
        assert running.proxy.drain_logs()
        assert wait_for_status(running, capped_secret, 429, within=5.0).status_code == 429


def test_the_next_period_lets_the_key_through_before_and_after_the_next_sync(
    keys: dict[str, tuple[AppKey, str]]
) -> None:
    capped, _ = keys["capped"]
    enforced(capped, amount=Decimal("0.50"))
    late = datetime(2026, 5, 31, 23, 58, tzinfo=UTC)
    with time_machine.travel(late, tick=False) as clock:
        record_entries([LogEntry(
            created_at=late, endpoint="/v1/chat/completions", app_key_id=capped.pk, model_requested=MODEL,
            status_code=200, prompt_tokens=1_000_000, completion_tokens=0, total_tokens=1_000_000,
        )])
        guard = BudgetGuard(reload_seconds=0)
        guard.sync()
        over = guard.check(capped.pk)
        assert over is not None and over.spent_usd == Decimal("1.00")
        assert over.resets_at == datetime(2026, 6, 1, tzinfo=UTC)

        clock.move_to(datetime(2026, 6, 1, 0, 0, 1, tzinfo=UTC))
        assert guard.check(capped.pk) is None  # the period ended: no sync needed
        guard.sync()
        assert guard.check(capped.pk) is None


def test_requests_refused_for_the_budget_do_not_use_up_the_keys_rate_limit(
    keys: dict[str, tuple[AppKey, str]], two_proxies: tuple[RunningProxy, RunningProxy]
) -> None:
    first, second = two_proxies
    for running in (first, second):
        # Synced by hand below: a guard's own thread reading the budgets table while the test deletes a
        # budget would hold SQLite's shared in-memory table ("database table is locked").
        running.proxy.budgets.stop()
    capped, capped_secret = keys["capped"]
    AppKey.objects.filter(pk=capped.pk).update(rate_limit_per_minute=3)
    budget = enforced(capped)
    first.proxy.budgets.reload_seconds = 0
    assert chat(first, capped_secret).status_code == 200  # one of the minute's three
    assert first.proxy.drain_logs()
    first.proxy.budgets.sync()

    for _ in range(5):  # past the rate limit, had these counted
        refused = chat(first, capped_secret)
        assert refused.json()["error"]["code"] == "budget_exceeded"

    budget.delete()  # an admin lifts the budget: the minute's two remaining requests go through
    first.proxy.budgets.sync()
    assert [chat(first, capped_secret).status_code for _ in range(2)] == [200, 200]
    assert chat(first, capped_secret).json()["error"]["code"] == "app_key_rate_limited"
