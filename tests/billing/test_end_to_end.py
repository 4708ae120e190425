"""End to end: calls through the real proxy are billed by the simulator, the poller stores that bill, and
what we stored matches both the bill and the requests the proxy recorded."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from django.db.models import Sum

from tests.billing.conftest import MODEL, Biller
from tests.billing.test_poll_billing import CALLS_AT, POLL_AT, reported, stored
from together_dash.billing.models import BillingLineItem
from together_dash.catalog.polling import poll_models
from together_dash.keys.services import create_app_key
from together_dash.pollers.testing import add_key
from together_dash.proxy.app import record_to_database
from together_dash.proxy.testing import running_proxy
from together_dash.traffic.models import RequestLog


@pytest.mark.django_db(transaction=True)
def test_proxied_calls_reach_the_stored_bill_and_match_what_the_proxy_recorded(biller: Biller) -> None:
    key, secret = add_key("main")
    app_key = create_app_key("billing-e2e")[1]
    poll_models()  # our side prices each request from the catalog, Together's bill from its own
    biller.at(CALLS_AT)
    upstream = biller.simulator.base_url
    with running_proxy(upstream, record=record_to_database, log_flush_interval=0.01) as proxy:
        for n in range(1, 6):
            body = {"model": MODEL, "messages": [{"role": "user", "content": "tell me more " * n}]}
            answer = httpx.post(
                f"{proxy.base_url}/chat/completions", json=body,
                headers={"Authorization": f"Bearer {app_key}"}, timeout=10,
            )
            assert answer.status_code == 200
        assert proxy.proxy.drain_logs()

    biller.poll(POLL_AT)

    assert stored() == reported(biller.report(secret, "2026-03"))
    logs = RequestLog.objects.filter(upstream_key=key, model_requested=MODEL)
    sent = logs.aggregate(
        prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"), cost=Sum("cost_usd")
    )
    billed = {i.product_name: i for i in BillingLineItem.objects.all()}
    assert billed["Serverless Inference - Input Tokens"].quantity == sent["prompt"]
    assert billed["Serverless Inference - Output Tokens"].quantity == sent["completion"]
    assert sum((i.cost for i in billed.values()), Decimal(0)) == sent["cost"]
