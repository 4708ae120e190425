"""The reconciliation end to end: calls through the real proxy (and some around it) billed by the simulator,
the bill fetched by the real billing poll, set against the rollups the proxy's request logs built."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
import time_machine
from django.test import Client

from tests.billing.conftest import MODEL, Biller
from together_dash.billing.products import product_of
from together_dash.billing.reconciliation import CAUSES, Row, reconcile
from together_dash.catalog.models import ModelInfo
from together_dash.catalog.polling import poll_models
from together_dash.catalog.pricing import invalidate_prices
from together_dash.keys.services import create_app_key
from together_dash.pollers.testing import add_key
from together_dash.proxy.app import record_to_database
from together_dash.proxy.testing import RunningProxy, running_proxy
from together_dash.simulator import catalog, endpoints
from together_dash.simulator.state import ORGANIZATION

pytestmark = pytest.mark.django_db(transaction=True)

CALLS_AT = datetime(2026, 3, 10, 9, 20, tzinfo=UTC)
HOUR_START = datetime(2026, 3, 10, 9, tzinfo=UTC)
POLL_AT = datetime(2026, 3, 10, 10, 5, tzinfo=UTC)
ORG = ORGANIZATION["organization_id"]
CACHING_MODEL = "deepseek-ai/DeepSeek-V3"  # the simulator prices its cached input tokens apart
OTHER_MODEL = catalog.SMALL_CHAT_MODEL


class Traffic:
    """Calls through the real proxy at a moment of our clock and the simulator's."""

    def __init__(self, biller: Biller, proxy: RunningProxy, app_key: str) -> None:
        self.biller, self.proxy, self.app_key = biller, proxy, app_key

    def chat(self, at: datetime, model: str = MODEL, messages: list | None = None, n: int = 1) -> None:
        self.biller.at(at)
        with time_machine.travel(at, tick=True):
            for i in range(n):
                asked = messages or [{"role": "user", "content": f"tell me {i} " * 9}]
                body = {"model": model, "messages": asked}
                answer = httpx.post(
                    f"{self.proxy.base_url}/chat/completions", json=body,
                    headers={"Authorization": f"Bearer {self.app_key}"}, timeout=10,
                )
                assert answer.status_code == 200, answer.text
            assert self.proxy.proxy.drain_logs()


def proxy_to(biller: Biller) -> AbstractContextManager[RunningProxy]:
    """The real proxy in front of the simulator, writing request logs (and rollups) to the database."""
    return running_proxy(biller.simulator.base_url, record=record_to_database, log_flush_interval=0.01)


@pytest.fixture
def upstream(biller: Biller) -> tuple[object, str]:
    return add_key("main")


@pytest.fixture
def traffic(biller: Biller, upstream: tuple[object, str]) -> Iterator[Traffic]:
    app_key = create_app_key("reconcile", upstream[0])[1]
    with proxy_to(biller) as proxy:
        yield Traffic(biller, proxy, app_key)


def hour_rows(start: datetime = HOUR_START, end: datetime = POLL_AT) -> dict[str, Row]:
    return {row.product: row for row in reconcile(start, end, "hour").rows if row.start == HOUR_START}


def test_traffic_that_all_went_through_the_proxy_matches_the_bill(traffic: Traffic, biller: Biller) -> None:
    poll_models()
    traffic.chat(CALLS_AT, n=4)
    traffic.chat(CALLS_AT + timedelta(minutes=5), model=OTHER_MODEL, n=2)
    traffic.chat(POLL_AT - timedelta(minutes=3))  # the hour still running when the poll asks

    biller.poll(POLL_AT)

    found = reconcile(HOUR_START, POLL_AT, "hour")
    rows = {(row.start, row.product): row for row in found.rows}
    billed = rows[HOUR_START, MODEL]
    assert billed.cause == "matched" and rows[HOUR_START, OTHER_MODEL].cause == "matched"
    assert billed.billed.input_tokens == billed.observed.prompt_tokens > 0
    assert billed.billed.output_tokens == billed.observed.completion_tokens > 0
    assert billed.billed.cost == billed.observed.cost and billed.difference == 0
    assert billed.observed.requests == 4 and billed.organization_id == ORG
    running = rows[POLL_AT.replace(minute=0), MODEL]
    assert (running.billed, running.cause, running.observed.requests) == (None, "not_billed_yet", 1)
    assert found.difference == 0 and found.billed_cost > 0
    assert [w.billed_cost is None for w in found.windows] == [False, True]


def test_calls_that_bypassed_the_proxy_are_named(traffic: Traffic, biller: Biller, upstream: tuple) -> None:
    poll_models()
    traffic.chat(CALLS_AT, n=3)
    biller.at(CALLS_AT + timedelta(minutes=1))
    biller.chat(upstream[1], content="sent straight to Together " * 8)  # the same key, not through us

    biller.poll(POLL_AT)

    row = hour_rows()[MODEL]
    assert row.cause == "bypassed"
    assert row.billed.tokens > row.observed.tokens and row.difference > 0
    assert row.observed.requests == 3
    assert row.cause_text == CAUSES["bypassed"]


def test_a_model_the_catalog_has_no_price_for_is_named(traffic: Traffic, biller: Biller) -> None:
    poll_models()
    ModelInfo.objects.filter(model_id=OTHER_MODEL).delete()  # Together serves it, our catalog lacks it
    invalidate_prices()
    traffic.chat(CALLS_AT, n=2)
    traffic.chat(CALLS_AT, model=OTHER_MODEL, n=2)

    biller.poll(POLL_AT)

    rows = hour_rows()
    assert rows[MODEL].cause == "matched"
    unpriced = rows[OTHER_MODEL]
    assert unpriced.cause == "unpriced_model"
    assert (unpriced.observed.unpriced_requests, unpriced.observed.cost) == (2, 0)
    assert unpriced.billed.cost > 0 and unpriced.difference == unpriced.billed.cost


def test_cached_input_priced_apart_by_together_is_named(traffic: Traffic, biller: Biller) -> None:
    poll_models()
    # Our catalog prices cached input like any input: Together bills it at its cached-input price.
    ModelInfo.objects.filter(model_id=CACHING_MODEL).update(pricing_cached_input=None)
    invalidate_prices()
    context = [{"role": "system", "content": "You answer questions about the billing of an API. " * 20}]
    for question in ("What is a window?", "What is a line item?"):
        messages = [*context, {"role": "user", "content": question}]
        traffic.chat(CALLS_AT, model=CACHING_MODEL, messages=messages)

    biller.poll(POLL_AT)

    row = hour_rows()[CACHING_MODEL]
    assert row.billed.cached_input_tokens > 0
    assert row.billed.tokens == row.observed.tokens
    assert row.observed.cost > row.billed.cost
    assert row.cause == "cached_input_pricing"


def test_dedicated_endpoint_minutes_are_a_charge_with_no_request_behind_it(
    biller: Biller, upstream: tuple
) -> None:
    root = biller.simulator.root_url
    headers = {"Authorization": f"Bearer {upstream[1]}"}
    biller.at(CALLS_AT)
    body = {
        "model": catalog.SMALL_CHAT_MODEL, "hardware": "1x_nvidia_a100_80gb_sxm",
        "autoscaling": {"min_replicas": 1, "max_replicas": 1},
    }
    created = httpx.post(f"{root}/v1/endpoints", json=body, headers=headers)
    assert created.status_code == 200, created.text
    endpoint = created.json()
    biller.at(CALLS_AT + timedelta(seconds=endpoints.PENDING_S + endpoints.STARTING_S + 20 * 60))
    stopped = httpx.patch(f"{root}/v1/endpoints/{endpoint['id']}", json={"state": "STOPPED"}, headers=headers)
    assert stopped.status_code == 200

    biller.poll(POLL_AT)

    (row,) = reconcile(HOUR_START, POLL_AT, "hour").rows
    assert row.product == "Dedicated Endpoints - Hardware Minutes"
    assert (row.charge, row.cause) == ("dedicated endpoint", "not_per_request")
    assert row.resource["endpoint_id"] == endpoint["id"]
    assert row.billed.quantity == 20 and row.billed.unit == "minutes"
    assert row.billed.cost == Decimal("0.854")  # 20 minutes at 4.27 cents


def test_each_organisation_is_set_against_its_own_keys(biller: Biller) -> None:
    main, _ = add_key("org-a")
    other, other_secret = add_key("org-b")
    poll_models()
    biller.simulator.set_scenario(key_organizations={other_secret: "org_simulated_other"})
    with proxy_to(biller) as proxy:
        Traffic(biller, proxy, create_app_key("a", main)[1]).chat(CALLS_AT, n=2)
        Traffic(biller, proxy, create_app_key("b", other)[1]).chat(CALLS_AT, n=1)
    biller.at(CALLS_AT)
    biller.chat(other_secret)  # only org B has traffic around the proxy

    biller.poll(POLL_AT)

    found = reconcile(HOUR_START, POLL_AT, "hour")
    causes = {row.organization_id: row.cause for row in found.rows}
    assert causes == {ORG: "matched", "org_simulated_other": "bypassed"}
    assert {org.organization.organization_id for org in found.organizations} == {ORG, "org_simulated_other"}


def test_traffic_on_a_key_no_poll_has_placed_yet_is_unlinked(traffic: Traffic, biller: Biller) -> None:
    poll_models()
    traffic.chat(CALLS_AT, n=1)  # the billing poller never ran: no organisation knows the key

    (row,) = reconcile(HOUR_START, POLL_AT, "hour").rows

    assert (row.organization_id, row.billed, row.cause) == (None, None, "unlinked_key")


def test_day_windows_add_up_the_hours(traffic: Traffic, biller: Biller) -> None:
    poll_models()
    traffic.chat(CALLS_AT, n=2)
    traffic.chat(CALLS_AT + timedelta(hours=2), n=1)

    biller.poll(datetime(2026, 3, 11, 0, 30, tzinfo=UTC))

    (day,) = reconcile(datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC), "day").rows
    hours = reconcile(datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC), "hour").rows
    assert day.cause == "matched" and day.observed.requests == 3
    assert day.billed.cost == sum(row.billed.cost for row in hours) > 0
    assert day.start == datetime(2026, 3, 10, tzinfo=UTC)


def test_the_api_answers_what_the_reader_found(traffic: Traffic, biller: Biller, viewer_web: Client) -> None:
    poll_models()
    traffic.chat(CALLS_AT, n=2)
    biller.poll(POLL_AT)

    answer = viewer_web.get(
        "/api/billing/reconciliation",
        {"start": HOUR_START.isoformat(), "end": POLL_AT.isoformat(), "granularity": "hour"},
    )

    assert answer.status_code == 200, answer.content
    body = answer.json()
    (row,) = body["rows"]
    assert (row["product"], row["cause"], row["organization_id"]) == (MODEL, "matched", ORG)
    assert Decimal(row["billed"]["cost"]) == Decimal(row["observed"]["cost"]) > 0
    assert body["causes"] == CAUSES and body["totals"]["rows_by_cause"] == {"matched": 1}
    assert [w["billed_cost"] is None for w in body["windows"]] == [False, True]
    assert body["organizations"][0]["billed_through"].startswith("2026-03-10T10:00:00")


@pytest.mark.parametrize(
    ("name", "value", "effect"),
    [
        ("Serverless Inference - Input Tokens", {"model": MODEL}, (MODEL, "input", "")),
        ("Serverless Inference - Cached Input Tokens", {"model": MODEL}, (MODEL, "cached_input", "")),
        ("Batch Inference - Output Tokens", {"model": MODEL}, (MODEL, "output", "batch job")),
        ("Dedicated Endpoints - Hardware Minutes", {"hardware": "1x"}, ("", "", "dedicated endpoint")),
        ("Fine-Tuning - Training Tokens", {"model": MODEL}, (MODEL, "", "fine-tuning")),
        ("Storage", {}, ("", "", "other")),
    ],
)
def test_a_line_item_names_its_model_token_type_and_charge(name: str, value: dict, effect: tuple) -> None:
    product = product_of(name, value, {})
    assert (product.model, product.token_type, product.charge) == effect
