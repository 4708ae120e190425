"""End to end: 402s through the real proxy (in front of the simulator) reach the SMTP server as one email."""

from __future__ import annotations

import httpx
import pytest

from tests.alerts.conftest import Inbox
from together_dash.alerts.delivery import deliver_pending
from together_dash.keys.models import TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.proxy.app import record_to_database
from together_dash.proxy.testing import running_proxy
from together_dash.simulator.testing import RunningSimulator

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


def chat(base_url: str, key: str, simulate: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **({"X-Simulate": simulate} if simulate else {})}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
    return httpx.post(f"{base_url}/chat/completions", json=body, headers=headers, timeout=10)


@pytest.mark.django_db(transaction=True)
def test_402s_through_the_proxy_send_one_email_and_the_recovery_one_more(
    fresh_simulator: RunningSimulator, inbox: Inbox, rules: None
) -> None:
    TogetherKey.create(name="main", secret="sim-upstream-key-main")
    app_key = create_app_key("alert-tests")[1]
    with running_proxy(fresh_simulator.base_url, record=record_to_database, log_flush_interval=0.01) as proxy:
        statuses = {chat(proxy.base_url, app_key, simulate="402").status_code for _ in range(20)}
        assert proxy.proxy.drain_logs()
        deliver_pending()
        assert statuses == {402}
        assert inbox.subjects == ["[together-dash] Credits exhausted on key main (HTTP 402)"]

        assert chat(proxy.base_url, app_key).status_code == 200
        assert proxy.proxy.drain_logs()
        deliver_pending()

    assert inbox.subjects[1:] == ["[together-dash] RESOLVED: credits are back on key main"]
