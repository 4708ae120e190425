"""Who may use the proxy: app keys, their upstream keys, model and rate limits, pass-through mode."""
from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import openai
import pytest

from together_dash.keys.audit import Actor
from together_dash.keys.lifecycle import revoke_issued_key, revoke_upstream_key
from together_dash.keys.models import AppKey, TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.proxy.testing import RunningProxy, running_proxy
from together_dash.simulator.testing import RunningSimulator, run_simulator
from together_dash.together.client import key_fingerprint
from together_dash.traffic.models import RequestLog

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
OTHER_MODEL = "Qwen/Qwen2.5-7B-Instruct-Turbo"
MESSAGES = [{"role": "user", "content": "hello"}]
CLIENT_OWN_KEY = "client-own-together-key-0001"


@pytest.fixture
def proxy(transactional_db: None, fresh_simulator: RunningSimulator) -> Iterator[RunningProxy]:
    # A long key cache: only the key-state version can make a change visible within a test.
    with running_proxy(fresh_simulator.base_url, key_cache_seconds=60.0) as running:
        yield running


@pytest.fixture
def upstream(transactional_db: None) -> TogetherKey:
    return TogetherKey.create(name="main", secret="sim-upstream-key-main")


def chat(proxy: RunningProxy, key: str, model: str = MODEL) -> httpx.Response:
    return httpx.post(f"{proxy.base_url}/chat/completions", json={"model": model, "messages": MESSAGES},
                      headers={"Authorization": f"Bearer {key}"}, timeout=10)


def assert_together_401(response: httpx.Response, presented: str, says: str) -> None:
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (None, "invalid_api_key")
    assert says in error["message"]
    if presented:
        assert presented not in response.text
        secret = presented.split("_", 2)[-1]  # after "<kind>_<prefix>_"; the secret may itself hold "_"
        assert secret not in response.text


def wait_for_status(proxy: RunningProxy, key: str, status: int, within: float = 2.0) -> httpx.Response:
    deadline = time.monotonic() + within
    while True:
        response = chat(proxy, key)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def settle(proxy: RunningProxy) -> None:
    """Let the proxy write its logs before the test writes: in-memory SQLite locks whole tables."""
    assert proxy.proxy.drain_logs()


def logs(proxy: RunningProxy) -> list[RequestLog]:
    assert proxy.proxy.drain_logs()
    return list(RequestLog.objects.order_by("created_at", "id"))


def test_an_unknown_app_key_gets_togethers_401_without_the_key_echoed(
    proxy: RunningProxy, upstream: TogetherKey
) -> None:
    made_up = "tdk_deadbeef_" + "x" * 43
    response = chat(proxy, made_up)

    assert_together_401(response, made_up, "Invalid app key")
    (log,) = logs(proxy)
    # Logged as the proxy's refusal of the app key, not as a Together key problem.
    assert (log.status_code, log.category, log.app_key_id) == (401, "auth", None)
    assert log.kind == "app_key_rejected"
    assert made_up not in log.error_message


def test_a_request_without_a_key_gets_a_401(proxy: RunningProxy) -> None:
    response = httpx.post(f"{proxy.base_url}/chat/completions", json={"model": MODEL, "messages": MESSAGES})

    assert_together_401(response, "", "didn't provide an API key")


def test_the_openai_sdk_sees_an_authentication_error_for_a_wrong_key(proxy: RunningProxy) -> None:
    client = openai.OpenAI(base_url=proxy.base_url, api_key="tdk_00000000_wrong", max_retries=0)

    with pytest.raises(openai.AuthenticationError) as excinfo:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)

    assert excinfo.value.code == "invalid_api_key"
    assert "tdk_00000000_wrong" not in str(excinfo.value)


def test_a_revoked_app_key_is_refused_at_once_and_says_so(proxy: RunningProxy, upstream: TogetherKey) -> None:
    app_key, plaintext = create_app_key("billing-service")
    assert chat(proxy, plaintext).status_code == 200
    settle(proxy)

    revoke_issued_key(app_key, Actor())
    response = wait_for_status(proxy, plaintext, 401)

    assert_together_401(response, plaintext, "was revoked")
    assert "billing-service" in response.json()["error"]["message"]
    refused = logs(proxy)[-1]
    assert (refused.app_key_id, refused.category) == (app_key.pk, "auth")


def test_an_expired_app_key_is_refused(proxy: RunningProxy, upstream: TogetherKey) -> None:
    app_key, plaintext = create_app_key("old-service", expires_in=timedelta(days=1))
    AppKey.objects.filter(pk=app_key.pk).update(expires_at=app_key.created_at - timedelta(minutes=1))

    assert_together_401(chat(proxy, plaintext), plaintext, "expired")


def test_a_revoked_upstream_key_is_named_in_the_401(proxy: RunningProxy, upstream: TogetherKey) -> None:
    _, plaintext = create_app_key("search", upstream="main")
    assert chat(proxy, plaintext).status_code == 200
    settle(proxy)

    revoke_upstream_key(upstream, Actor())
    response = wait_for_status(proxy, plaintext, 401)

    assert_together_401(response, plaintext, "upstream Together key 'main'")


def test_an_app_key_without_an_upstream_key_uses_the_only_active_one(
    proxy: RunningProxy, upstream: TogetherKey
) -> None:
    _, plaintext = create_app_key("no-mapping")

    assert chat(proxy, plaintext).status_code == 200
    (log,) = logs(proxy)
    assert (log.upstream_key_id, log.key_fingerprint) == (upstream.pk, upstream.fingerprint)


def test_an_app_key_without_an_upstream_key_is_refused_when_two_are_active(
    proxy: RunningProxy, upstream: TogetherKey
) -> None:
    TogetherKey.create(name="second", secret="sim-upstream-key-second")
    _, plaintext = create_app_key("no-mapping")

    assert_together_401(chat(proxy, plaintext), plaintext, "not exactly one active key")


def test_a_model_outside_the_app_keys_list_is_a_403(proxy: RunningProxy, upstream: TogetherKey) -> None:
    _, plaintext = create_app_key("narrow", allowed_models=[MODEL])
    client = openai.OpenAI(base_url=proxy.base_url, api_key=plaintext, max_retries=0)

    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    with pytest.raises(openai.PermissionDeniedError) as excinfo:
        client.chat.completions.create(model=OTHER_MODEL, messages=MESSAGES)

    assert excinfo.value.code == "model_not_allowed"
    assert OTHER_MODEL in str(excinfo.value)
    allowed, refused = logs(proxy)
    assert allowed.status_code == 200
    assert (refused.status_code, refused.category, refused.kind) == (403, "auth", "permission_denied")
    assert refused.model_requested == OTHER_MODEL


def test_the_app_keys_rate_limit_answers_429_with_rate_limit_headers(
    proxy: RunningProxy, upstream: TogetherKey
) -> None:
    _, plaintext = create_app_key("throttled", rate_limit_per_minute=3)

    statuses = [chat(proxy, plaintext).status_code for _ in range(3)]
    limited = chat(proxy, plaintext)

    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.headers["x-ratelimit-limit"] == "3"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert 0 < float(limited.headers["x-ratelimit-reset"]) <= 60
    assert limited.json()["error"]["code"] == "app_key_rate_limited"
    assert (logs(proxy)[-1].category, logs(proxy)[-1].kind) == ("rate_limit", "rate_limited")


def test_pass_through_forwards_the_clients_own_key_and_attributes_it_by_fingerprint(
    transactional_db: None,
) -> None:
    known = TogetherKey.create(name="team-key", secret=CLIENT_OWN_KEY)
    with run_simulator(keys=[CLIENT_OWN_KEY]) as strict, \
            running_proxy(strict.base_url, passthrough=True) as proxy:
        accepted = chat(proxy, CLIENT_OWN_KEY)
        rejected_upstream = chat(proxy, "some-other-together-key")
        entries = logs(proxy)

    assert accepted.status_code == 200
    assert rejected_upstream.status_code == 401  # the simulator's own answer: the key went upstream as sent
    assert "Invalid API key provided" in rejected_upstream.json()["error"]["message"]
    ok, refused = entries
    assert (ok.key_fingerprint, ok.upstream_key_id, ok.app_key_id) == (known.fingerprint, known.pk, None)
    assert refused.key_fingerprint == key_fingerprint("some-other-together-key")
    assert refused.upstream_key_id is None


def test_app_keys_still_work_in_pass_through_mode(
    transactional_db: None, fresh_simulator: RunningSimulator
) -> None:
    TogetherKey.create(name="main", secret="sim-upstream-key-main")
    _, plaintext = create_app_key("still-works")
    with running_proxy(fresh_simulator.base_url, passthrough=True) as proxy:
        response = chat(proxy, plaintext)
        (log,) = logs(proxy)

    assert response.status_code == 200
    assert log.app_key_id is not None
