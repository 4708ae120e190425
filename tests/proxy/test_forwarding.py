"""What crosses the proxy: headers both ways, paths and queries, bodies, and client disconnects."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from together_dash.keys.models import TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.proxy.forwarding import (
    decodable_encodings,
    endpoint_name,
    is_proxy_path,
    path_problem,
    read_request_facts,
    upstream_request_headers,
    upstream_root,
    upstream_url,
    with_stream_usage,
)
from together_dash.proxy.testing import RunningProxy, ServedApp, running_proxy, serve
from together_dash.simulator.app import SimulatorApp
from together_dash.simulator.state import SimulatorState
from together_dash.traffic.models import RequestLog

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
MESSAGES = [{"role": "user", "content": "hello"}]
UPSTREAM_SECRET = "sim-upstream-key-forwarding"


async def echo_upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An upstream that answers with what it received, plus a few headers of each kind."""
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    seen = {
        "headers": [[name.decode(), value.decode()] for name, value in scope["headers"]],
        "raw_path": scope["raw_path"].decode(),
        "query": scope["query_string"].decode(),
        "body": body.decode(),
    }
    payload = json.dumps(seen).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"x-ratelimit-remaining", b"7"),
        (b"x-custom", b"kept"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-authenticate", b"Basic"),
    ]})
    await send({"type": "http.response.body", "body": payload})


async def openai_style_upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A stream in OpenAI's style: usage in a separate choices-less chunk, only when asked for."""
    message = await receive()
    request = json.loads(message["body"])
    chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "served-model",
             "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
    events = [chunk, {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    if (request.get("stream_options") or {}).get("include_usage"):
        events.append({**chunk, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1,
                                                          "total_tokens": 6}})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    for event in events:
        await send({"type": "http.response.body", "body": b"data: " + json.dumps(event).encode() + b"\n\n",
                    "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


class DisconnectSpy:
    """The real simulator, watched: notes a request whose caller went away before its response ended."""

    def __init__(self) -> None:
        self.app = SimulatorApp(SimulatorState())
        self.cut_short = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        finished = False

        async def watched_send(message: dict[str, Any]) -> None:
            nonlocal finished
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        async def watched_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.disconnect" and not finished:
                self.cut_short.set()
            return message

        await self.app(scope, watched_receive, watched_send)


@pytest.fixture
def app_key(transactional_db: None) -> str:
    TogetherKey.create(name="main", secret=UPSTREAM_SECRET)
    return create_app_key("forwarding-tests")[1]


@pytest.fixture
def echo(transactional_db: None) -> Iterator[ServedApp]:
    with serve(echo_upstream, lifespan="off") as server:
        yield server


@pytest.fixture
def proxy_to_echo(echo: ServedApp) -> Iterator[RunningProxy]:
    with running_proxy(f"{echo.root_url}/v1") as running:
        yield running


# ---- through a proxy ----------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_upstream_gets_the_upstream_key_and_no_hop_by_hop_headers(
    proxy_to_echo: RunningProxy, echo: ServedApp, app_key: str
) -> None:
    response = httpx.post(
        f"{proxy_to_echo.base_url}/chat/completions?trace=1&x=%2F",
        content=b'{"model": "m",   "messages": []}',
        headers={
            "Authorization": f"Bearer {app_key}", "Content-Type": "application/json",
            "Connection": "keep-alive, x-drop-me", "X-Drop-Me": "1", "TE": "trailers",
            "Proxy-Authorization": "Basic abc", "X-Simulate": "402",
        },
    )
    seen = response.json()
    upstream_headers = dict(seen["headers"])

    assert upstream_headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert upstream_headers["host"] == echo.root_url.removeprefix("http://")
    assert upstream_headers["x-forwarded-for"] == "127.0.0.1"
    assert upstream_headers["x-simulate"] == "402"
    for hop in ("x-drop-me", "te", "proxy-authorization"):
        assert hop not in upstream_headers
    assert upstream_headers.get("connection", "keep-alive") == "keep-alive"  # httpx's own, not the client's
    assert (seen["raw_path"], seen["query"]) == ("/v1/chat/completions", "trace=1&x=%2F")
    assert seen["body"] == '{"model": "m",   "messages": []}'  # a non-stream body goes up byte for byte


@pytest.mark.django_db(transaction=True)
def test_the_client_gets_upstream_headers_but_no_hop_by_hop_ones(
    proxy_to_echo: RunningProxy, app_key: str
) -> None:
    response = httpx.get(f"{proxy_to_echo.base_url}/models", headers={"Authorization": f"Bearer {app_key}"})

    assert response.headers["x-ratelimit-remaining"] == "7"
    assert response.headers["x-custom"] == "kept"
    assert "keep-alive" not in response.headers
    assert "proxy-authenticate" not in response.headers


@pytest.mark.django_db(transaction=True)
def test_a_stream_request_asks_upstream_for_usage_and_the_client_never_sees_the_usage_chunk(
    app_key: str,
) -> None:
    with serve(openai_style_upstream, lifespan="off") as upstream, \
            running_proxy(f"{upstream.root_url}/v1") as proxy:
        direct = httpx.post(f"{upstream.root_url}/v1/chat/completions",
                            json={"model": "m", "messages": MESSAGES, "stream": True})
        proxied = httpx.post(f"{proxy.base_url}/chat/completions",
                             json={"model": "m", "messages": MESSAGES, "stream": True},
                             headers={"Authorization": f"Bearer {app_key}"})
        assert proxy.proxy.drain_logs()

    assert proxied.content == direct.content
    assert b'"usage"' not in proxied.content
    log = RequestLog.objects.get()
    assert (log.prompt_tokens, log.completion_tokens, log.total_tokens) == (5, 1, 6)
    assert (log.model_requested, log.model_served) == ("m", "served-model")


@pytest.mark.django_db(transaction=True)
def test_a_client_that_hangs_up_mid_stream_cancels_the_upstream_request(app_key: str) -> None:
    spy = DisconnectSpy()
    with serve(spy) as upstream, running_proxy(f"{upstream.root_url}/v1") as proxy:
        headers = {"Authorization": f"Bearer {app_key}", "X-Simulate-Output-Tokens": "400",
                   "X-Simulate-Chunk-Delay-Ms": "25"}  # a 10-second stream
        body = {"model": MODEL, "messages": MESSAGES, "stream": True}
        url = f"{proxy.base_url}/chat/completions"
        with httpx.stream("POST", url, json=body, headers=headers) as response:
            chunks = response.iter_raw()
            next(chunks)
            next(chunks)
        assert spy.cut_short.wait(3)
        assert proxy.proxy.drain_logs()

    log = RequestLog.objects.get()
    assert log.status_code == 499
    assert log.stream is True and log.ttft_ms is not None
    assert log.latency_ms < 5000


@pytest.mark.django_db(transaction=True)
def test_the_proxy_serves_requests_from_many_clients_at_once(app_key: str) -> None:
    spy = DisconnectSpy()
    with serve(spy) as upstream, running_proxy(f"{upstream.root_url}/v1") as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key=app_key, max_retries=0)
        results: list[str] = []

        def call() -> None:
            completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
            results.append(completion.choices[0].finish_reason)

        threads = [threading.Thread(target=call) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert proxy.proxy.drain_logs()

    assert results == ["stop"] * 16
    assert RequestLog.objects.filter(status_code=200).count() == 16


# ---- the pieces ---------------------------------------------------------------------------------------

def test_only_decodable_encodings_are_offered_upstream() -> None:
    assert decodable_encodings(b"gzip, deflate, br, zstd") == b"gzip, deflate"
    assert decodable_encodings(b"br") == b""
    assert decodable_encodings(b"gzip;q=1.0, identity;q=0.5") == b"gzip;q=1.0, identity;q=0.5"


def test_a_stream_request_gets_include_usage_and_keeps_the_rest_of_its_bytes() -> None:
    body = b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]}'
    facts, data = read_request_facts(body)

    rewritten = with_stream_usage(body, data)

    assert (facts.model, facts.stream, facts.wants_usage) == ("m", True, False)
    assert rewritten.endswith(body[1:])
    assert json.loads(rewritten) == {**json.loads(body), "stream_options": {"include_usage": True}}


def test_existing_stream_options_are_kept_when_usage_is_added() -> None:
    body = b'{"model":"m","stream":true,"stream_options":{"include_usage":false,"other":1}}'
    _, data = read_request_facts(body)

    assert json.loads(with_stream_usage(body, data))["stream_options"] == {"include_usage": True, "other": 1}


def test_a_request_that_asked_for_usage_is_recognised() -> None:
    facts, _ = read_request_facts(b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}')

    assert facts.wants_usage


def test_a_body_that_is_not_a_json_object_has_no_facts() -> None:
    assert read_request_facts(b"[1, 2]")[1] is None
    assert read_request_facts(b"not json")[0].model == ""


def test_the_authorization_header_is_replaced_by_the_upstream_key() -> None:
    headers = upstream_request_headers(
        [(b"authorization", b"Bearer tdk_abc_secret"), (b"content-length", b"10"), (b"host", b"dash")],
        "upstream-secret", None,
    )

    assert headers == [(b"authorization", b"Bearer upstream-secret")]


def test_the_client_is_appended_to_x_forwarded_for_once() -> None:
    def chain(incoming: list[tuple[bytes, bytes]], client: str) -> bytes:
        return dict(upstream_request_headers(incoming, "s", client))[b"x-forwarded-for"]

    assert chain([], "192.0.2.7") == b"192.0.2.7"
    assert chain([(b"x-forwarded-for", b"10.0.0.1")], "192.0.2.7") == b"10.0.0.1, 192.0.2.7"
    # uvicorn already made the trusted last hop the client: not appended twice.
    assert chain([(b"x-forwarded-for", b"10.0.0.1, 192.0.2.7")], "192.0.2.7") == b"10.0.0.1, 192.0.2.7"


def test_ids_in_paths_are_replaced_so_endpoints_group() -> None:
    assert endpoint_name("/v1/chat/completions") == "/v1/chat/completions"
    job = "ft-3b8f1c9e-7d2a-4c1b-9e3f-1a2b3c4d5e6f"
    assert endpoint_name(f"/v1/fine-tunes/{job}/events") == "/v1/fine-tunes/{id}/events"
    assert endpoint_name("/v1/files/file-abc123/content") == "/v1/files/{id}/content"
    assert endpoint_name("/v1/batches/0f8fad5b-d9cb-469f-a165-70867728950e") == "/v1/batches/{id}"


def test_every_api_version_is_served_and_nothing_else() -> None:
    assert all(is_proxy_path(path) for path in ("/v1/chat/completions", "/v2/supported-models", "/v3/whoami"))
    assert not any(is_proxy_path(path) for path in ("/v4/x", "/v10/x", "/v1x", "/api/usage", "/"))


def test_the_upstream_url_keeps_the_version_of_the_path() -> None:
    root = upstream_root("https://api.together.xyz/v1")
    assert root == upstream_root("https://api.together.xyz/") == "https://api.together.xyz"
    scope = {"path": "/v2/projects/p1/models", "raw_path": b"/v2/projects/p1/models", "query_string": b"a=1"}
    assert upstream_url(root, scope) == "https://api.together.xyz/v2/projects/p1/models?a=1"


@pytest.mark.parametrize("raw", [
    b"/v1/../admin/", b"/v1/%2e%2e/admin/", b"/v1/..%2fadmin/", b"/v1/.%2E/admin", b"/v1/./models",
    b"/v1/files/..", b"/v1/..%5cadmin", b"/v1/%2E%2E%2Fadmin",
])
def test_dot_segments_are_refused_however_they_are_spelled(raw: bytes) -> None:
    from urllib.parse import unquote

    scope = {"path": unquote(raw.decode()), "raw_path": raw}
    assert path_problem(scope)[:1] == (400,)


def test_a_repeated_version_prefix_says_which_base_url_each_sdk_needs() -> None:
    doubled = {"path": "/v1/v1/chat/completions", "raw_path": b"/v1/v1/chat/completions"}
    status, message, code = path_problem(doubled)
    assert (status, code) == (404, "not_found")
    assert 'base_url="http://HOST:8000"' in message and 'base_url="http://HOST:8000/v1"' in message
    assert path_problem({"path": "/v1/models..json", "raw_path": b"/v1/models..json"}) is None


def test_project_ids_are_folded_out_of_the_endpoint_name() -> None:
    assert endpoint_name("/v2/projects/proj_abc/models") == "/v2/projects/{id}/models"
    assert endpoint_name("/v3/whoami") == "/v3/whoami"
