"""The simulator bills its own calls: together 3.x's organization.usage.costs.list over what it served."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
import together

from together_dash.simulator import catalog, endpoints
from together_dash.simulator.state import ORGANIZATION
from together_dash.simulator.testing import RunningSimulator

MODEL = catalog.DEFAULT_CHAT_MODEL
START = datetime(2026, 3, 10, 9, 30, tzinfo=UTC).timestamp()  # a Tuesday, mid-hour
MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def march(sim: RunningSimulator) -> RunningSimulator:
    sim.freeze_clock(at=START)
    return sim


def chat(root_http: httpx.Client, **fields: object) -> dict:
    answer = root_http.post("/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, **fields})
    assert answer.status_code == 200, answer.text
    return answer.json()["usage"]


def items_by_product(window: object) -> dict[str, object]:
    return {item.product_name: item for item in window.line_items}


def test_served_tokens_appear_once_the_hour_is_over(
    march: RunningSimulator, root_http: httpx.Client, together_client: together.Together
) -> None:
    usages = [chat(root_http), chat(root_http, max_tokens=3)]
    unfinished = list(together_client.organization.usage.costs.list(month="2026-03", granularity="hour"))
    march.advance(1800)
    windows = list(together_client.organization.usage.costs.list(month="2026-03", granularity="hour"))

    assert unfinished == []
    assert len(windows) == 1
    assert windows[0].start_time == datetime(2026, 3, 10, 9, tzinfo=UTC)
    items = items_by_product(windows[0])
    tokens_in = items["Serverless Inference - Input Tokens"]
    tokens_out = items["Serverless Inference - Output Tokens"]
    assert Decimal(tokens_in.quantity) == sum(u["prompt_tokens"] for u in usages)
    assert Decimal(tokens_out.quantity) == sum(u["completion_tokens"] for u in usages)
    assert Decimal(tokens_in.unit_price) == Decimal("0.88") / 1_000_000
    assert Decimal(tokens_in.cost) == Decimal(tokens_in.quantity) * Decimal(tokens_in.unit_price)
    assert tokens_in.attributes == {"model": MODEL}
    assert tokens_in.applied_credit.type == "PREPAID"


def test_daily_windows_wait_for_the_day_to_end(
    march: RunningSimulator, root_http: httpx.Client, together_client: together.Together
) -> None:
    chat(root_http)
    march.advance(3 * 3600)
    same_day = list(together_client.organization.usage.costs.list(month="2026-03"))
    march.advance(24 * 3600)
    next_day = list(together_client.organization.usage.costs.list(month="2026-03", granularity="day"))

    assert same_day == []
    assert [w.date for w in next_day] == ["2026-03-10"]


def test_embeddings_and_images_have_their_own_lines(
    march: RunningSimulator, root_http: httpx.Client, together_client: together.Together
) -> None:
    root_http.post("/v1/embeddings", json={"model": catalog.DEFAULT_EMBEDDING_MODEL, "input": "hello there"})
    root_http.post(
        "/v1/images/generations", json={"model": catalog.DEFAULT_IMAGE_MODEL, "prompt": "a", "n": 2}
    )
    march.advance(3600)

    (window,) = together_client.organization.usage.costs.list(month="2026-03", granularity="hour")
    products = {(i.product_name, i.attributes["model"]): i for i in window.line_items}

    images = products[("Serverless Inference - Images", catalog.DEFAULT_IMAGE_MODEL)]
    assert (images.quantity, images.unit_price, images.cost) == ("2", "0.0027", "0.0054")
    assert ("Serverless Inference - Input Tokens", catalog.DEFAULT_EMBEDDING_MODEL) in products
    assert ("Serverless Inference - Output Tokens", catalog.DEFAULT_EMBEDDING_MODEL) not in products


def test_a_running_endpoint_bills_per_minute_and_its_traffic_does_not(
    march: RunningSimulator, root_http: httpx.Client, together_client: together.Together
) -> None:
    body = {
        "model": catalog.SMALL_CHAT_MODEL,
        "hardware": "1x_nvidia_a100_80gb_sxm",
        "autoscaling": {"min_replicas": 1, "max_replicas": 1},
    }
    endpoint = root_http.post("/v1/endpoints", json=body).json()
    march.advance(endpoints.PENDING_S + endpoints.STARTING_S)
    served = root_http.post("/v1/chat/completions", json={"model": endpoint["name"], "messages": MESSAGES})
    march.advance(10 * 60)
    root_http.patch(f"/v1/endpoints/{endpoint['id']}", json={"state": "STOPPED"})
    march.advance(3600)

    windows = list(together_client.organization.usage.costs.list(month="2026-03", granularity="hour"))

    assert served.status_code == 200
    minutes = [i for w in windows for i in w.line_items]
    assert {i.product_name for i in minutes} == {"Dedicated Endpoints - Hardware Minutes"}
    assert sum(Decimal(i.quantity) for i in minutes) == 10
    assert sum(Decimal(i.cost) for i in minutes) == Decimal("0.427")
    assert minutes[0].attributes["endpoint_id"] == endpoint["id"]


def test_pages_follow_the_cursor(
    march: RunningSimulator, root_http: httpx.Client, together_client: together.Together
) -> None:
    for _ in range(3):
        chat(root_http)
        march.advance(3600)

    first = together_client.organization.usage.costs.list(month="2026-03", granularity="hour", limit=2)
    every = list(together_client.organization.usage.costs.list(month="2026-03", granularity="hour", limit=2))

    assert len(first.data) == 2
    assert first.next_cursor
    assert len(every) == 3
    assert len({w.start_time for w in every}) == 3


def test_report_envelope_and_an_empty_month(march: RunningSimulator, root_http: httpx.Client) -> None:
    chat(root_http)
    march.advance(86400)

    march_report = root_http.get("/v1/billing/usage", params={"month": "2026-03"}).json()
    february = root_http.get("/v1/billing/usage", params={"month": "2026-02"}).json()

    assert {k: march_report[k] for k in ("object", "organization_id", "billing_period", "currency")} == {
        "object": "list",
        "organization_id": ORGANIZATION["organization_id"],
        "billing_period": "2026-03",
        "currency": "USD",
    }
    assert march_report["earliest_window_start"] == "2026-03-10T00:00:00Z"
    assert march_report["latest_window_end"] == "2026-03-11T00:00:00Z"
    assert march_report["next_cursor"] is None
    assert february["data"] == []
    assert february["earliest_window_start"] is None
    assert february["latest_window_end"] is None


def test_another_organisation_is_forbidden(together_client: together.Together) -> None:
    with pytest.raises(together.PermissionDeniedError):
        list(together_client.organization.usage.costs.list(organization_id="org_not_ours"))


def test_bad_parameters_are_400(root_http: httpx.Client) -> None:
    hourly_cursor_on_daily = {"month": "2026-03", "after": "MjAyNi0wM3xob3VyfDI"}

    assert root_http.get("/v1/billing/usage", params={"month": "2026-13"}).status_code == 400
    assert root_http.get("/v1/billing/usage", params={"granularity": "week"}).status_code == 400
    assert root_http.get("/v1/billing/usage", params={"limit": 1001}).status_code == 400
    assert root_http.get("/v1/billing/usage", params=hourly_cursor_on_daily).status_code == 400


OTHER_KEY = "sim-other-org-key"
OTHER_ORG = "org_simulated_other"


def test_a_key_of_another_organisation_has_its_own_bill_and_cannot_read_ours(
    march: RunningSimulator, root_http: httpx.Client
) -> None:
    march.set_scenario(key_organizations={OTHER_KEY: OTHER_ORG})
    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    chat(root_http)
    root_http.post("/v1/chat/completions", headers=other, json={"model": MODEL, "messages": MESSAGES * 3})
    march.advance(3600)
    month = {"month": "2026-03", "granularity": "hour"}

    ours = root_http.get("/v1/billing/usage", params=month).json()
    theirs = root_http.get("/v1/billing/usage", params=month, headers=other).json()
    ours_by_id = {**month, "organization_id": ORGANIZATION["organization_id"]}
    refused = root_http.get("/v1/billing/usage", params=ours_by_id, headers=other)
    who = root_http.get("/v1/whoami", headers=other).json()

    assert theirs["organization_id"] == who["organization_id"] == OTHER_ORG
    assert ours["organization_id"] == ORGANIZATION["organization_id"]
    prompt = {o["organization_id"]: o["data"][0]["line_items"][0]["quantity"] for o in (ours, theirs)}
    assert prompt[OTHER_ORG] != prompt[ORGANIZATION["organization_id"]]
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_denied"


def test_a_key_without_billing_permission_gets_403(march: RunningSimulator, root_http: httpx.Client) -> None:
    march.set_scenario(billing_denied_keys=["sim-test-key"])

    answer = root_http.get("/v1/billing/usage", params={"month": "2026-03"})

    assert answer.status_code == 403
    assert "billing" in answer.json()["error"]["message"]


def test_a_small_page_size_makes_the_sdk_follow_the_cursor(
    march: RunningSimulator, root_http: httpx.Client, together_client: together.Together
) -> None:
    for _ in range(5):
        chat(root_http)
        march.advance(3600)
    march.set_scenario(billing_page_size=2)

    month = {"month": "2026-03", "granularity": "hour", "limit": 1000}
    first = root_http.get("/v1/billing/usage", params=month)
    every = list(together_client.organization.usage.costs.list(**month))

    assert len(first.json()["data"]) == 2
    assert len(every) == 5


def test_repeated_leading_messages_are_cached_and_billed_at_the_cached_price(
    march: RunningSimulator, root_http: httpx.Client, together_client: together.Together
) -> None:
    model = catalog.get(catalog.CACHED_PRICE_MODEL)
    assert model is not None and model.cached_input_price is not None
    system = {"role": "system", "content": "You answer questions about the simulator. " * 20}
    turns = [[system, {"role": "user", "content": "first"}], [system, {"role": "user", "content": "second"}]]
    usages = [
        root_http.post("/v1/chat/completions", json={"model": model.id, "messages": m}).json()["usage"]
        for m in turns
    ]
    march.advance(3600)

    (window,) = together_client.organization.usage.costs.list(month="2026-03", granularity="hour")
    items = items_by_product(window)
    listed = {m["id"]: m for m in root_http.get("/v1/models").json()}[model.id]

    assert usages[0]["cached_tokens"] == 0
    assert 0 < usages[1]["cached_tokens"] < usages[1]["prompt_tokens"]
    cached_line = items["Serverless Inference - Cached Input Tokens"]
    assert Decimal(cached_line.quantity) == usages[1]["cached_tokens"]
    assert Decimal(cached_line.unit_price) == Decimal(str(model.cached_input_price)) / 1_000_000
    uncached = sum(u["prompt_tokens"] - u["cached_tokens"] for u in usages)
    assert Decimal(items["Serverless Inference - Input Tokens"].quantity) == uncached
    assert listed["pricing"]["cached_input"] == model.cached_input_price


def test_models_without_a_cached_price_report_no_cached_tokens(
    march: RunningSimulator, root_http: httpx.Client
) -> None:
    messages = [{"role": "system", "content": "Be brief. " * 30}, {"role": "user", "content": "hi"}]
    for _ in range(2):
        usage = chat(root_http, messages=messages)

    assert usage["cached_tokens"] == 0
    assert "cached_input" not in {m["id"]: m for m in root_http.get("/v1/models").json()}[MODEL]["pricing"]
