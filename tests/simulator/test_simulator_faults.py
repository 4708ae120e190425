"""X-Simulate faults raise the exception class each SDK raises against real Together (reference §3.4)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
import together

from together_dash.simulator import catalog, errors
from together_dash.simulator.testing import RunningSimulator

MODEL = catalog.DEFAULT_CHAT_MODEL
MESSAGES = [{"role": "user", "content": "hi"}]

# fault -> (exception class name in both SDKs, status, a piece of Together's message)
STATUS_FAULTS = {
    "401": ("AuthenticationError", 401, errors.INVALID_API_KEY),
    "402": ("APIStatusError", 402, errors.CREDIT_LIMIT),
    "403": ("PermissionDeniedError", 403, "must be less than the context length"),
    "404": ("NotFoundError", 404, f"Unable to access model {MODEL}"),
    "429": ("RateLimitError", 429, "You have been rate limited"),
    "500": ("InternalServerError", 500, "Internal server error"),
    "502": ("InternalServerError", 502, "Bad gateway"),
    "503": ("InternalServerError", 503, errors.OVERLOADED),
    "504": ("InternalServerError", 504, "Gateway timeout"),
    "html": ("InternalServerError", 502, "502 Bad Gateway"),
}
SDKS = {"openai": openai, "together": together}


def make_client(sdk: str, sim: RunningSimulator, timeout: float = 5.0) -> Any:
    if sdk == "openai":
        return openai.OpenAI(base_url=sim.base_url, api_key="fault-key", max_retries=0, timeout=timeout)
    # together 3.x puts the version in each path: its base URL is the root.
    return together.Together(base_url=sim.root_url, api_key="fault-key", max_retries=0, timeout=timeout)


def chat(client: Any, fault: str) -> Any:
    return client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers={"X-Simulate": fault})


@pytest.mark.parametrize("sdk", SDKS)
@pytest.mark.parametrize("fault", STATUS_FAULTS)
def test_status_faults_raise_the_sdk_class(sim: RunningSimulator, sdk: str, fault: str) -> None:
    class_name, status, message = STATUS_FAULTS[fault]
    expected = getattr(SDKS[sdk], class_name)

    with pytest.raises(expected) as caught:
        chat(make_client(sdk, sim), fault)

    assert type(caught.value) is expected  # 402 must be the generic class, not a subclass
    assert caught.value.status_code == status
    assert message in caught.value.response.text
    if fault != "html":  # openai 3.x leaves a non-JSON body out of the message: "Error code: 502"
        assert message in str(caught.value)


@pytest.mark.parametrize("sdk", SDKS)
def test_timeout_fault_hangs_until_the_client_gives_up(sim: RunningSimulator, sdk: str) -> None:
    started = time.monotonic()

    with pytest.raises(SDKS[sdk].APITimeoutError):
        chat(make_client(sdk, sim, timeout=0.3), "timeout")

    assert 0.3 <= time.monotonic() - started < 3


def test_timeout_fault_gives_up_after_timeout_s_with_a_504(sim: RunningSimulator, http: httpx.Client) -> None:
    sim.set_scenario(timeout_s=0.05)

    response = http.post(
        "/chat/completions", json={"model": MODEL, "messages": MESSAGES}, headers={"X-Simulate": "timeout"}
    )

    assert response.status_code == 504


@pytest.mark.parametrize("sdk", SDKS)
def test_reset_fault_is_a_connection_error(sim: RunningSimulator, sdk: str) -> None:
    module = SDKS[sdk]

    with pytest.raises(module.APIConnectionError) as caught:
        chat(make_client(sdk, sim), "reset")

    assert not isinstance(caught.value, module.APITimeoutError)


def test_reset_fault_sends_no_bytes_at_all(http: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match="without sending"):
        http.get("/models", headers={"X-Simulate": "reset"})


@pytest.mark.parametrize("sdk", SDKS)
def test_malformed_fault_is_a_200_the_sdk_cannot_parse(
    sim: RunningSimulator, sdk: str, http: httpx.Client
) -> None:
    response = http.get("/models", headers={"X-Simulate": "malformed"})

    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    with pytest.raises(ValueError):
        chat(make_client(sdk, sim), "malformed")


def test_html_fault_is_a_cloudflare_page(http: httpx.Client) -> None:
    response = http.get("/models", headers={"X-Simulate": "html"})

    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>502 Bad Gateway</title>" in response.text


def test_429_fault_carries_reset_header_and_limiter_type(http: httpx.Client) -> None:
    requests = http.get("/models", headers={"X-Simulate": "429"})
    tokens = http.get("/models", headers={"X-Simulate": "429-tokens"})

    assert float(requests.headers["x-ratelimit-reset"]) > 0
    assert requests.json()["error"]["type"] == "dynamic_request_limited"
    assert tokens.json()["error"]["type"] == "dynamic_token_limited"


def test_a_fault_applies_to_one_request_only(http: httpx.Client) -> None:
    assert http.get("/models", headers={"X-Simulate": "503"}).status_code == 503
    assert http.get("/models").status_code == 200


def test_unknown_fault_is_rejected_so_typos_show(http: httpx.Client) -> None:
    response = http.get("/models", headers={"X-Simulate": "5O3"})

    assert response.status_code == 400
    assert "Unknown X-Simulate value" in response.json()["error"]["message"]


def test_latency_header_delays_one_response(http: httpx.Client) -> None:
    started = time.monotonic()
    http.get("/models", headers={"X-Simulate-Latency-Ms": "150"})
    delayed = time.monotonic() - started
    started = time.monotonic()
    http.get("/models")

    assert delayed >= 0.15
    assert time.monotonic() - started < 0.15


def test_faults_do_not_consume_credits_or_budget(sim: RunningSimulator, http: httpx.Client) -> None:
    sim.set_credits(1)

    http.post("/chat/completions", json={"model": MODEL, "messages": MESSAGES}, headers={"X-Simulate": "500"})
    response = http.post("/chat/completions", json={"model": MODEL, "messages": MESSAGES})

    assert response.status_code == 200
    assert sim.summary()["credits_remaining"] == 0
