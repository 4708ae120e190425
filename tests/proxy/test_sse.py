"""Watching responses as they pass: event streams (sse.py) and JSON bodies (capture.py)."""
from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from together_dash.proxy import sse
from together_dash.proxy.capture import HEAD_LIMIT, BodyCapture, Usage, make_decoder
from together_dash.proxy.sse import SseWatcher

USAGE = {"prompt_tokens": 45, "completion_tokens": 3, "total_tokens": 48, "cached_tokens": 0}


def event(data: Any) -> bytes:
    return b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n\n"


def chunk(content: str, usage: dict | None = None, finish: str | None = None, **extra: Any) -> dict:
    return {"id": "ogzjdpL-6Ng1vN", "object": "chat.completion.chunk", "model": "served/model",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": content},
                         "finish_reason": finish}],
            "usage": usage, **extra}


TOGETHER_STREAM = b"".join([
    event(chunk("Hel")), event(chunk("lo")), event(chunk("", USAGE, "stop")), b"data: [DONE]\n\n",
])
USAGE_ONLY = {"id": "x", "object": "chat.completion.chunk", "model": "served/model", "choices": [],
              "usage": USAGE}
OPENAI_STREAM = b"".join([
    event(chunk("Hi")), event(chunk("", None, "stop")), event(USAGE_ONLY), b"data: [DONE]\n\n",
])


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def relay(watcher: SseWatcher, parts: list[bytes]) -> bytes:
    return b"".join(watcher.feed(part) for part in parts) + watcher.finish()


@pytest.mark.parametrize("size", [1, 2, 7, 64, 100_000])
def test_a_together_stream_passes_unchanged_and_gives_up_model_usage_and_done(size: int) -> None:
    watcher = SseWatcher(clock=lambda: 1.5)

    out = relay(watcher, pieces(TOGETHER_STREAM, size))

    assert out == TOGETHER_STREAM
    assert (watcher.model, watcher.response_id, watcher.done) == ("served/model", "ogzjdpL-6Ng1vN", True)
    assert watcher.usage == Usage(45, 3, 48, 0)
    assert watcher.first_event_at == 1.5


@pytest.mark.parametrize("size", [1, 3, 50, 100_000])
def test_a_usage_only_chunk_only_the_proxy_asked_for_is_taken_out(size: int) -> None:
    watcher = SseWatcher(strip_usage_only=True)

    out = relay(watcher, pieces(OPENAI_STREAM, size))

    assert out == OPENAI_STREAM.replace(event(USAGE_ONLY), b"")
    assert watcher.usage == Usage(45, 3, 48, 0)
    assert watcher.stripped == 1


def test_a_usage_only_chunk_the_client_asked_for_is_kept() -> None:
    watcher = SseWatcher()

    assert relay(watcher, pieces(OPENAI_STREAM, 5)) == OPENAI_STREAM
    assert watcher.usage == Usage(45, 3, 48, 0)


def test_usage_on_a_content_chunk_is_never_removed_even_when_stripping() -> None:
    watcher = SseWatcher(strip_usage_only=True)

    assert relay(watcher, [TOGETHER_STREAM]) == TOGETHER_STREAM


def test_crlf_line_endings_are_read_too() -> None:
    stream = TOGETHER_STREAM.replace(b"\n", b"\r\n")
    watcher = SseWatcher()

    assert relay(watcher, pieces(stream, 9)) == stream
    assert watcher.usage == Usage(45, 3, 48, 0) and watcher.done


def test_a_stream_without_usage_leaves_the_counts_unknown() -> None:
    watcher = SseWatcher()
    relay(watcher, [event(chunk("a")), b"data: [DONE]\n\n"])

    assert watcher.usage is None
    assert watcher.done


def test_an_error_event_mid_stream_is_noticed_with_its_status() -> None:
    error = {"error": {"message": "Internal server error", "type": "server_error", "param": None,
                       "code": None}}
    watcher = SseWatcher()
    relay(watcher, [event(chunk("a")), event(error)])

    assert b"Internal server error" in watcher.error_event
    assert watcher.error_status == 500
    assert not watcher.done


def test_a_gzipped_stream_is_watched_through_a_decoder_and_passed_unchanged() -> None:
    compressed = gzip.compress(TOGETHER_STREAM)
    watcher = SseWatcher(content_encoding=b"gzip", strip_usage_only=True)

    assert relay(watcher, pieces(compressed, 11)) == compressed
    assert watcher.usage == Usage(45, 3, 48, 0)


def test_a_line_without_end_is_not_held_without_bound() -> None:
    watcher = SseWatcher(strip_usage_only=True)
    endless = b"data: " + b"x" * (sse.MAX_LINE + 10)

    out = relay(watcher, pieces(endless, 65536))

    assert out == endless
    assert len(watcher._pending) <= sse.MAX_LINE


# ---- JSON bodies --------------------------------------------------------------------------------------

COMPLETION = {"id": "cmpl-1", "object": "chat.completion", "model": "served/model",
              "choices": [{"message": {"content": 'a "model": "fake" inside text'}}],
              "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                        "prompt_tokens_details": {"cached_tokens": 4}}}


def test_a_small_json_body_is_read_whole() -> None:
    capture = BodyCapture(make_decoder(None))
    for part in pieces(json.dumps(COMPLETION).encode(), 10):
        capture.feed(part)

    summary = capture.summary()

    assert (summary.model, summary.response_id) == ("served/model", "cmpl-1")
    assert summary.usage == Usage(10, 5, 15, 4)


def test_a_large_json_body_is_read_from_its_head_and_tail_without_keeping_it() -> None:
    big = {"object": "list", "model": "embed/model", "data": [{"embedding": [0.123456] * 50_000}],
           "usage": {"prompt_tokens": 7, "total_tokens": 7}}
    body = json.dumps(big).encode()
    capture = BodyCapture(make_decoder(None))
    for part in pieces(body, 16_384):
        capture.feed(part)

    summary = capture.summary()

    assert len(body) > 4 * HEAD_LIMIT and capture.overflowed
    assert len(capture.head) == HEAD_LIMIT
    assert summary.model == "embed/model"
    assert summary.usage == Usage(7, None, 7, None)


def test_a_gzipped_json_body_is_read_through_a_decoder() -> None:
    capture = BodyCapture(make_decoder(b"gzip"))
    capture.feed(gzip.compress(json.dumps(COMPLETION).encode()))

    assert capture.summary().usage == Usage(10, 5, 15, 4)


def test_a_body_in_an_unknown_encoding_tells_nothing() -> None:
    capture = BodyCapture(make_decoder(b"br"))
    capture.feed(b"\x8b\x01\x80whatever")

    assert capture.summary().usage is None


def test_a_body_that_is_not_json_tells_nothing() -> None:
    capture = BodyCapture(make_decoder(None))
    capture.feed(b"<html>Bad gateway</html>")

    assert capture.summary().model == ""
    assert capture.head == b"<html>Bad gateway</html>"
