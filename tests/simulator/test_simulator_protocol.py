"""Raw protocol checks: exact SSE framing, headers, large streams, mid-stream faults, bad requests."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from together_dash.simulator import catalog
from together_dash.simulator.inference import REPLY

MODEL = catalog.DEFAULT_CHAT_MODEL
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Reply with exactly: Hello!"}]}


def events(body: bytes) -> list[bytes]:
    assert body.endswith(b"\n\n")
    return body[:-2].split(b"\n\n")


def test_sse_framing_matches_together_byte_for_byte(http: httpx.Client) -> None:
    response = http.post("/chat/completions", json={**CHAT, "stream": True})

    assert response.headers["content-type"] == "text/event-stream;charset=utf-8"
    raw = events(response.content)
    assert raw[-1] == b"data: [DONE]"
    last = json.loads(raw[-2].removeprefix(b"data: "))
    chunk_id, created = last["id"], last["created"]
    usage = last["usage"]
    head = f'data: {{"id":"{chunk_id}","object":"chat.completion.chunk","created":{created},'
    seed = last["choices"][0]["seed"]
    expected = (
        f'{head}"choices":[{{"index":0,"text":"","logprobs":null,"finish_reason":"stop","seed":{seed},'
        f'"delta":{{"token_id":128009,"role":"assistant","content":""}}}}],"model":"{MODEL}",'
        f'"usage":{{"prompt_tokens":{usage["prompt_tokens"]},"completion_tokens":{len(REPLY) + 1},'
        f'"total_tokens":{usage["total_tokens"]},"cached_tokens":0}}}}\n\ndata: [DONE]\n\n'
    ).encode()
    assert response.content.endswith(expected)
    first = raw[0].decode()
    assert first == (
        f'{head}"choices":[{{"index":0,"text":"This","logprobs":null,"finish_reason":null,"seed":null,'
        f'"delta":{{"token_id":2028,"role":"assistant","content":"This"}}}}],"model":"{MODEL}","usage":null}}'
    )
    assert len(raw) == len(REPLY) + 2


def test_every_event_is_one_data_line(http: httpx.Client) -> None:
    response = http.post(
        "/chat/completions",
        json={
            **CHAT,
            "stream": True,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        },
    )

    for event in events(response.content):
        assert event.startswith(b"data: ")
        assert b"\n" not in event


def test_response_headers_identify_the_request(http: httpx.Client) -> None:
    response = http.post("/chat/completions", json=CHAT)

    assert len(response.headers["x-request-id"]) == 32
    assert response.headers["cf-ray"].endswith("-SJC")
    assert float(response.headers["x-total-time"]) >= 0
    assert response.headers["content-type"] == "application/json"


def test_large_output_streams_50_mb_chunk_by_chunk(http: httpx.Client) -> None:
    size = 50 * 1024 * 1024
    received = 0
    with http.stream(
        "POST",
        "/chat/completions",
        json={**CHAT, "stream": True},
        headers={"X-Simulate-Output-Bytes": str(size), "X-Simulate-Chunk-Bytes": "65536"},
    ) as response:
        tail = b""
        for piece in response.iter_bytes():
            received += len(piece)
            tail = (tail + piece)[-2000:]
    final = json.loads(events(tail)[-2].removeprefix(b"data: "))
    assert received > size
    assert tail.endswith(b"data: [DONE]\n\n")
    assert final["usage"]["completion_tokens"] == size // 4 + 1


def test_output_size_can_come_from_the_body(http: httpx.Client) -> None:
    response = http.post("/chat/completions", json={**CHAT, "simulate": {"output_bytes": 1000}})
    tokens = http.post("/chat/completions", json={**CHAT, "simulate": {"output_tokens": 30}})

    assert len(response.json()["choices"][0]["message"]["content"]) == 1000
    assert tokens.json()["usage"]["completion_tokens"] == 31


def test_chunk_delay_paces_the_stream(http: httpx.Client) -> None:
    started = time.monotonic()
    arrivals = []
    with http.stream(
        "POST",
        "/chat/completions",
        json={**CHAT, "stream": True},
        headers={"X-Simulate-Chunk-Delay-Ms": "40", "X-Simulate-Output-Tokens": "5"},
    ) as response:
        for _ in response.iter_lines():
            arrivals.append(time.monotonic() - started)

    assert arrivals[-1] >= 0.2
    assert arrivals[0] < 0.1  # the first chunk is not held back


def test_midstream_error_event_then_the_stream_ends(http: httpx.Client) -> None:
    response = http.post(
        "/chat/completions", json={**CHAT, "stream": True}, headers={"X-Simulate": "midstream-error"}
    )

    raw = events(response.content)
    assert json.loads(raw[-1].removeprefix(b"data: "))["error"]["type"] == "server_error"
    assert b"[DONE]" not in response.content
    assert len(raw) == len(REPLY) // 2 + 1


def test_midstream_reset_breaks_the_body(http: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(
            "/chat/completions", json={**CHAT, "stream": True}, headers={"X-Simulate": "midstream-reset"}
        )
    assert http.get("/models").status_code == 200


def test_malformed_json_request_is_400_invalid_request_error(http: httpx.Client) -> None:
    response = http.post(
        "/chat/completions", content=b'{"model": ', headers={"Content-Type": "application/json"}
    )
    wrong_shape = http.post("/chat/completions", json=["not", "an", "object"])

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert wrong_shape.status_code == 400


def test_unknown_endpoint_is_404(http: httpx.Client) -> None:
    assert http.get("/nothing-here").status_code == 404


def test_dedicated_filter_lists_the_non_serverless_models(http: httpx.Client) -> None:
    listed = http.get("/models", params={"dedicated": "true"}).json()

    assert [m["id"] for m in listed] == [catalog.NON_SERVERLESS_MODEL]
