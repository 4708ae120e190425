"""A request to one of our dedicated endpoints costs nothing per token: Together bills the endpoint by
the minute while it runs (the simulator's bill does too), so pricing it per token would count it twice."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.endpoints.conftest import BOOT_S, MODEL, Fleet
from together_dash.catalog.polling import poll_models
from together_dash.catalog.pricing import prices
from together_dash.traffic.models import RequestLog, UsageHour

pytestmark = pytest.mark.django_db(transaction=True)


def test_requests_to_a_polled_endpoint_keep_their_tokens_and_cost_nothing_per_token(fleet: Fleet) -> None:
    poll_models()  # the serverless model's price, for the request that is priced per token
    endpoint = fleet.create(inactive_timeout=60)
    fleet.poll()
    fleet.run(BOOT_S + 60)
    assert prices().per_minute == {endpoint["name"]}  # the poll moved the generation: no reload needed

    assert fleet.chat_through_proxy(endpoint["name"], count=2) == [200, 200]
    assert fleet.chat_through_proxy(MODEL, count=1) == [200]

    to_endpoint = RequestLog.objects.filter(model_requested=endpoint["name"])
    assert to_endpoint.count() == 2
    for log in to_endpoint:
        assert log.prompt_tokens and log.completion_tokens
        assert log.cost_usd == Decimal(0)
    serverless = RequestLog.objects.get(model_requested=MODEL)
    assert serverless.cost_usd is not None and serverless.cost_usd > 0
    hour = UsageHour.objects.get(model=endpoint["name"])
    assert (hour.requests, hour.cost_usd, hour.unpriced_requests) == (2, Decimal(0), 0)

