"""A wrong app key at the proxy is the client's problem, not an upstream key's: its own, quieter alert.

Traffic goes through the real proxy in front of the simulator, and is recorded as the proxy records it.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.alerts.conftest import Inbox
from together_dash.alerts.delivery import deliver_pending
from together_dash.alerts.kinds import Kind
from together_dash.alerts.models import Alert, AlertRule
from together_dash.alerts.tasks import evaluate_alerts_now
from together_dash.keys.audit import Actor
from together_dash.keys.lifecycle import revoke_issued_key
from together_dash.keys.models import TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.proxy.app import record_to_database
from together_dash.proxy.testing import RunningProxy, running_proxy
from together_dash.simulator.testing import RunningSimulator
from together_dash.traffic.models import ErrorGroup, RequestLog

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
MADE_UP = "tdk_deadbeef_" + "x" * 43


@pytest.fixture
def upstream(rules: None) -> TogetherKey:
    return TogetherKey.create(name="main", secret="sim-upstream-key-main")


@pytest.fixture
def proxy(fresh_simulator: RunningSimulator, upstream: TogetherKey) -> Iterator[RunningProxy]:
    with running_proxy(
        fresh_simulator.base_url, record=record_to_database, log_flush_interval=0.01
    ) as running:
        yield running


def chat(proxy: RunningProxy, key: str, times: int = 1, simulate: str = "") -> None:
    """Requests at once: the proxy refuses an unknown prefix after its next key-index reload (1 s)."""
    headers = {"Authorization": f"Bearer {key}", **({"X-Simulate": simulate} if simulate else {})}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
    with (
        httpx.Client(base_url=proxy.base_url, headers=headers, timeout=10) as client,
        ThreadPoolExecutor(max_workers=times) as pool,
    ):
        list(pool.map(lambda _: client.post("/chat/completions", json=body), range(times)))
    assert proxy.proxy.drain_logs()


def firing() -> dict[str, set[str]]:
    alerts = Alert.objects.filter(state=Alert.State.FIRING)
    found: dict[str, set[str]] = {}
    for kind, subject in alerts.values_list("rule__kind", "subject"):
        found.setdefault(kind, set()).add(subject)
    return found


def test_wrong_app_keys_fire_neither_key_invalid_nor_error_rate_but_app_key_rejected_once(
    proxy: RunningProxy, inbox: Inbox
) -> None:
    chat(proxy, MADE_UP, times=15)
    chat(proxy, "not-even-a-dashboard-key", times=10)
    evaluate_alerts_now()
    evaluate_alerts_now()
    deliver_pending()

    assert firing() == {Kind.APP_KEY_REJECTED: {"appkey:unknown"}}
    alert = Alert.objects.get()
    assert alert.label == "missing or unknown app keys"
    assert "refused 25 requests within 15 minutes; they never reached Together" in alert.context["detail"]
    subjects = [" ".join(subject.split()) for subject in inbox.subjects]  # long headers arrive folded
    assert subjects == ["[together-dash] App key rejected by the proxy: missing or unknown app keys"]
    assert "Key invalid" not in inbox.text()


def test_fewer_rejections_than_the_threshold_fire_nothing(proxy: RunningProxy) -> None:
    chat(proxy, MADE_UP, times=19)
    evaluate_alerts_now()

    assert firing() == {}
    assert AlertRule.objects.get(kind=Kind.APP_KEY_REJECTED).threshold == 20


def test_a_revoked_app_key_is_counted_as_its_own_subject(proxy: RunningProxy) -> None:
    app_key, plaintext = create_app_key("billing-service")
    revoke_issued_key(app_key, Actor())
    chat(proxy, plaintext, times=20)
    chat(proxy, MADE_UP, times=3)
    evaluate_alerts_now()

    assert firing() == {Kind.APP_KEY_REJECTED: {f"appkey:{app_key.pk}"}}
    alert = Alert.objects.get()
    assert alert.label == f"app key billing-service (tdk_{app_key.prefix}_…)"
    assert "was revoked" in alert.context["detail"]
    assert alert.context["path"] == f"/keys/app/{app_key.pk}/"
    assert plaintext.split("_", 2)[2] not in str(alert.context)  # the secret, which may itself hold "_"


def test_a_401_from_together_on_our_key_still_fires_key_invalid(
    proxy: RunningProxy, upstream: TogetherKey
) -> None:
    plaintext = create_app_key("service", upstream)[1]
    chat(proxy, plaintext, simulate="401")
    evaluate_alerts_now()

    assert firing() == {Kind.KEY_INVALID: {f"key:{upstream.pk}"}}
    assert "answered 401 by Together" in Alert.objects.get().context["detail"]


def test_the_error_group_of_rejections_does_not_blame_the_upstream_key(proxy: RunningProxy) -> None:
    chat(proxy, MADE_UP, times=2)
    assert set(RequestLog.objects.values_list("status_code", "kind", "upstream_key_id")) == {
        (401, "app_key_rejected", None)
    }
    group = ErrorGroup.objects.get()
    assert (group.kind, group.count, group.upstream_key_id) == ("app_key_rejected", 2, None)

    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    web = Client()
    web.force_login(admin)
    page = web.get(f"/errors/{group.pk}/").content.decode()

    assert "The proxy refused the request before it reached Together" in page
    assert "none: the proxy refused the app key, nothing reached Together" in page
    assert "rotate it: create a new one at https://api.together.xyz" not in page


def test_an_app_key_without_a_usable_upstream_key_is_counted_for_that_app_key(proxy: RunningProxy) -> None:
    TogetherKey.create(name="second", secret="sim-upstream-key-2")  # no mapping, and not exactly one key
    app_key, plaintext = create_app_key("orphan")
    chat(proxy, plaintext, times=20)
    evaluate_alerts_now()

    assert firing() == {Kind.APP_KEY_REJECTED: {f"appkey:{app_key.pk}"}}
    assert "has no upstream Together key" in Alert.objects.get().context["detail"]
