"""The proxy at /v1/, driven by the official openai and together SDKs, in front of the real simulator."""
from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import openai
import pytest
import together
from django.test import override_settings

from together_dash.proxy.testing import RunningProxy, running_proxy, serve
from together_dash.simulator.testing import RunningSimulator
from together_dash.traffic.models import RequestLog

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
EMBEDDING_MODEL = "BAAI/bge-large-en-v1.5"
MESSAGES = [{"role": "user", "content": "Say hello to the on-call engineer."}]
CHAT_BODY = {"model": MODEL, "messages": MESSAGES}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# Fields the simulator draws at random per response; everything else must be identical.
RANDOM_FIELDS = frozenset({"id", "created", "seed"})


def openai_client(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)


def together_client(base_url: str, key: str) -> together.Together:
    return together.Together(base_url=base_url, api_key=key, max_retries=0)


def without_random(value: Any) -> Any:
    """The value with per-response random fields blanked, recursively."""
    if isinstance(value, dict):
        return {k: ("*" if k in RANDOM_FIELDS else without_random(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [without_random(item) for item in value]
    return value


def sse_events(raw: bytes) -> list[Any]:
    """The data payloads of a raw event stream, parsed, in order ([DONE] kept as the string)."""
    events = []
    for block in raw.split(b"\n\n"):
        if block.startswith(b"data: "):
            payload = block[len(b"data: "):]
            events.append(payload.decode() if payload == b"[DONE]" else without_random(json.loads(payload)))
    return events


def raw_stream(base_url: str, key: str, body: dict[str, Any]) -> tuple[httpx.Response, bytes]:
    with httpx.stream("POST", f"{base_url}/chat/completions", json=body, timeout=10,
                      headers={"Authorization": f"Bearer {key}"}) as response:
        return response, b"".join(response.iter_raw())


def only_log(proxy: RunningProxy) -> RequestLog:
    assert proxy.proxy.drain_logs()
    return RequestLog.objects.get()


# ---- successful calls ---------------------------------------------------------------------------------

def test_a_chat_completion_comes_back_as_the_simulator_sends_it(
    proxy: RunningProxy, fresh_simulator: RunningSimulator, app_key: str
) -> None:
    direct = openai_client(fresh_simulator.base_url, "k").chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES)
    proxied = openai_client(proxy.base_url, app_key).chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES)

    assert proxied.status_code == 200
    assert without_random(json.loads(proxied.content)) == without_random(json.loads(direct.content))
    assert proxied.headers["x-ratelimit-limit"] == direct.headers["x-ratelimit-limit"]
    assert proxied.headers["content-type"] == direct.headers["content-type"]
    log = only_log(proxy)
    usage = proxied.parse().usage
    assert (log.status_code, log.model_requested, log.model_served) == (200, MODEL, MODEL)
    assert (log.prompt_tokens, log.completion_tokens, log.total_tokens) == (
        usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    assert log.cached_tokens == 0
    assert log.request_id == proxied.headers["x-request-id"]
    assert log.ratelimit_limit == int(proxied.headers["x-ratelimit-limit"])
    assert log.ratelimit_remaining == int(proxied.headers["x-ratelimit-remaining"])
    assert log.endpoint == "/v1/chat/completions"
    assert log.stream is False and log.ttft_ms is None
    assert log.latency_ms > 0
    assert log.category == "" and log.kind == ""


def test_a_stream_relays_every_chunk_unchanged_with_usage_last_then_done(
    proxy: RunningProxy, fresh_simulator: RunningSimulator, app_key: str
) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    direct, direct_raw = raw_stream(fresh_simulator.base_url, "k", body)
    proxied, proxied_raw = raw_stream(proxy.base_url, app_key, body)

    assert proxied.status_code == 200
    assert proxied.headers["content-type"] == direct.headers["content-type"]
    events = sse_events(proxied_raw)
    assert events == sse_events(direct_raw)
    assert events[-1] == "[DONE]"
    assert events[-2]["usage"]["total_tokens"] > 0
    log = only_log(proxy)
    assert log.stream is True
    assert log.ttft_ms is not None and 0 < log.ttft_ms <= log.latency_ms
    assert log.total_tokens == events[-2]["usage"]["total_tokens"]
    assert log.completion_tokens == events[-2]["usage"]["completion_tokens"]


def test_a_stream_without_include_usage_reaches_the_client_as_the_simulator_sends_it_and_still_counts_tokens(
    proxy: RunningProxy, fresh_simulator: RunningSimulator, app_key: str
) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    _, direct_raw = raw_stream(fresh_simulator.base_url, "k", body)
    _, proxied_raw = raw_stream(proxy.base_url, app_key, body)

    assert sse_events(proxied_raw) == sse_events(direct_raw)
    log = only_log(proxy)
    assert log.prompt_tokens is not None and log.completion_tokens is not None


def test_the_openai_sdk_streams_through_the_proxy(proxy: RunningProxy, app_key: str) -> None:
    stream = openai_client(proxy.base_url, app_key).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)

    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text
    assert chunks[-1].usage is not None
    assert only_log(proxy).total_tokens == chunks[-1].usage.total_tokens


def test_the_together_sdk_streams_and_completes_through_the_proxy(proxy: RunningProxy, app_key: str) -> None:
    client = together_client(proxy.root_url, app_key)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)

    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert completion.choices[0].message.content
    assert proxy.proxy.drain_logs()
    logs = list(RequestLog.objects.order_by("created_at"))
    assert [log.stream for log in logs] == [True, False]
    assert logs[1].total_tokens == completion.usage.total_tokens


def test_a_streamed_tool_call_arrives_whole(
    proxy: RunningProxy, fresh_simulator: RunningSimulator, app_key: str
) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "tools": [WEATHER_TOOL]}
    _, direct_raw = raw_stream(fresh_simulator.base_url, "k", body)
    stream = openai_client(proxy.base_url, app_key).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, tools=[WEATHER_TOOL])
    chunks = list(stream)

    calls = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    assert calls[0].function.name == "get_weather"
    arguments = "".join(call.function.arguments or "" for call in calls)
    assert "city" in json.loads(arguments)
    assert len(chunks) == len(sse_events(direct_raw)) - 1  # the SDK consumes [DONE]
    assert only_log(proxy).completion_tokens is not None


def test_embeddings_and_the_models_list_pass_through(
    proxy: RunningProxy, fresh_simulator: RunningSimulator, app_key: str
) -> None:
    client = openai_client(proxy.base_url, app_key)
    embedding = client.embeddings.create(model=EMBEDDING_MODEL, input=["first", "second"])
    models = client.with_options().get("/models", cast_to=object)
    direct = httpx.get(f"{fresh_simulator.base_url}/models", headers={"Authorization": "Bearer k"})
    direct_models = direct.json()

    assert len(embedding.data) == 2 and embedding.data[0].embedding
    assert models == direct_models  # Together's bare array, unchanged
    assert proxy.proxy.drain_logs()
    embed_log, models_log = RequestLog.objects.order_by("created_at")
    assert embed_log.endpoint == "/v1/embeddings"
    assert embed_log.prompt_tokens == embedding.usage.prompt_tokens
    assert embed_log.total_tokens == embedding.usage.total_tokens
    assert (models_log.method, models_log.endpoint, models_log.status_code) == ("GET", "/v1/models", 200)
    # A response without usage leaves every count unknown: NULL, never 0.
    counts = (models_log.prompt_tokens, models_log.completion_tokens, models_log.total_tokens)
    assert counts == (None, None, None)
    assert models_log.model_requested == ""


def test_a_large_file_upload_streams_through_to_the_simulator(
    proxy: RunningProxy, fresh_simulator: RunningSimulator, app_key: str
) -> None:
    line = json.dumps({"messages": [{"role": "user", "content": "hi " * 40},
                                    {"role": "assistant", "content": "hello " * 40}]}) + "\n"
    dataset = (line * (3 * 1024 * 1024 // len(line))).encode()
    files = {"file": ("train.jsonl", dataset, "application/octet-stream")}
    data = {"purpose": "fine-tune", "file_name": "train.jsonl"}

    response = httpx.post(f"{proxy.base_url}/files/upload", files=files, data=data, timeout=30,
                          headers={"Authorization": f"Bearer {app_key}"})

    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == len(dataset)
    log = only_log(proxy)
    assert (log.endpoint, log.status_code, log.model_requested) == ("/v1/files/upload", 200, "")


# ---- errors -------------------------------------------------------------------------------------------

ERROR_CASES = [
    ("401", "auth", "invalid_api_key"),
    ("402", "billing", "insufficient_credits"),
    ("403", "validation", "token_limit_exceeded"),
    ("404", "validation", "model_not_found"),
    ("429", "rate_limit", "request_rate_limited"),
    ("500", "server", "model_overloaded"),
    ("502", "server", "upstream_timeout"),
    ("503", "server", "service_unavailable"),
    ("504", "server", "upstream_timeout"),
]


def _raised(client: openai.OpenAI, fault: str) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as excinfo:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers={"X-Simulate": fault})
    return excinfo.value


@pytest.mark.parametrize(("fault", "category", "kind"), ERROR_CASES)
def test_each_upstream_error_raises_what_the_simulator_raises_and_is_classified(
    proxy: RunningProxy, fresh_simulator: RunningSimulator, app_key: str, fault: str, category: str, kind: str
) -> None:
    direct = _raised(openai_client(fresh_simulator.base_url, "k"), fault)
    proxied = _raised(openai_client(proxy.base_url, app_key), fault)

    assert type(proxied) is type(direct)
    assert str(proxied) == str(direct)
    assert proxied.status_code == int(fault)
    log = only_log(proxy)
    assert (log.status_code, log.category, log.kind) == (int(fault), category, kind)
    assert log.error_message


def test_a_context_overflow_is_a_validation_error_with_the_simulators_message(
    proxy: RunningProxy, fresh_simulator: RunningSimulator, app_key: str
) -> None:
    huge = [{"role": "user", "content": "word " * 200_000}]
    with pytest.raises(openai.BadRequestError) as direct:
        openai_client(fresh_simulator.base_url, "k").chat.completions.create(model=MODEL, messages=huge)
    with pytest.raises(openai.BadRequestError) as proxied:
        openai_client(proxy.base_url, app_key).chat.completions.create(model=MODEL, messages=huge)

    assert str(proxied.value) == str(direct.value)
    log = only_log(proxy)
    assert (log.status_code, log.category, log.kind) == (400, "validation", "token_limit_exceeded")


def test_the_together_sdk_gets_the_same_402_as_directly(
    proxy: RunningProxy, fresh_simulator: RunningSimulator, app_key: str
) -> None:
    errors = []
    for base_url, key in ((fresh_simulator.root_url, "k"), (proxy.root_url, app_key)):
        with pytest.raises(together.APIStatusError) as excinfo:
            together_client(base_url, key).chat.completions.create(
                model=MODEL, messages=MESSAGES, extra_headers={"X-Simulate": "402"})
        errors.append(excinfo.value)

    assert type(errors[1]) is type(errors[0])
    assert str(errors[1]) == str(errors[0])
    assert only_log(proxy).kind == "insufficient_credits"


def test_an_unreachable_upstream_is_a_502_in_togethers_shape_logged_as_a_network_error(app_key: str) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{unused.getsockname()[1]}/v1"  # nothing listens there
    with running_proxy(dead_url) as proxy:
        response = httpx.post(f"{proxy.base_url}/chat/completions", json=CHAT_BODY,
                              headers={"Authorization": f"Bearer {app_key}"})
        log = only_log(proxy)

    assert response.status_code == 502
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "upstream_connect_error"
    assert error["message"].startswith("The proxy could not connect to Together.")
    assert (log.status_code, log.category, log.kind) == (502, "network", "connection_error")


def test_an_upstream_that_resets_the_connection_is_a_502_saying_so(proxy: RunningProxy, app_key: str) -> None:
    response = httpx.post(f"{proxy.base_url}/chat/completions", json=CHAT_BODY,
                          headers={"Authorization": f"Bearer {app_key}", "X-Simulate": "reset"})
    log = only_log(proxy)

    assert response.status_code == 502
    assert response.json()["error"]["message"].startswith(
        "Together closed the connection after receiving the request, before answering; "
        "the proxy did not send it again")
    assert (log.status_code, log.category, log.kind) == (502, "network", "connection_error")


def test_an_upstream_that_does_not_answer_in_time_is_a_504_logged_as_a_timeout(
    fresh_simulator: RunningSimulator, app_key: str
) -> None:
    with running_proxy(fresh_simulator.base_url, timeout=0.3) as proxy:
        response = httpx.post(f"{proxy.base_url}/chat/completions", json=CHAT_BODY,
                              headers={"Authorization": f"Bearer {app_key}", "X-Simulate": "timeout"})
        log = only_log(proxy)

    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert (log.status_code, log.category, log.kind) == (504, "network", "timeout")


def test_a_200_whose_body_is_not_json_is_forwarded_as_is_and_logged_as_a_bad_response(
    proxy: RunningProxy, app_key: str
) -> None:
    response = httpx.post(f"{proxy.base_url}/chat/completions", json=CHAT_BODY,
                          headers={"Authorization": f"Bearer {app_key}", "X-Simulate": "malformed"})
    log = only_log(proxy)

    assert response.status_code == 200
    assert response.content.startswith(b'{"id":') and not response.content.endswith(b"}")
    assert (log.status_code, log.category, log.kind) == (200, "network", "bad_response")


# ---- the client side ----------------------------------------------------------------------------------

def test_the_asgi_application_serves_the_proxy_at_v1_and_the_dashboard_elsewhere(
    fresh_simulator: RunningSimulator, app_key: str
) -> None:
    from together_dash.asgi import application

    with override_settings(TOGETHER_BASE_URL=fresh_simulator.base_url), serve(application) as server:
        health = httpx.get(f"{server.root_url}/healthz")
        completion = openai_client(f"{server.root_url}/v1", app_key).chat.completions.create(
            model=MODEL, messages=MESSAGES)
        from together_dash.asgi import proxy

        assert proxy.drain_logs()

    assert health.json()["status"] == "ok"
    assert completion.choices[0].message.content
    assert RequestLog.objects.get().total_tokens == completion.usage.total_tokens


def test_the_asgi_application_sends_v2_and_v3_to_the_proxy_not_to_django(
    fresh_simulator: RunningSimulator, app_key: str
) -> None:
    from together_dash.asgi import application, proxy

    with override_settings(TOGETHER_BASE_URL=fresh_simulator.base_url), serve(application) as server:
        answers = [httpx.get(f"{server.root_url}{path}", headers={"Authorization": f"Bearer {app_key}"})
                   for path in ("/v2/supported-models", "/v3/whoami")]
        assert proxy.drain_logs()

    assert all(answer.headers["content-type"].startswith("application/json") for answer in answers)
    endpoints = sorted(RequestLog.objects.values_list("endpoint", flat=True))
    assert endpoints == ["/v2/supported-models", "/v3/whoami"]
