"""Read what a response says about itself (model served, usage, id) from a bounded copy of its body."""
from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A body up to HEAD_LIMIT is kept whole and parsed whole. Past it only the head and a rolling tail are
# kept and searched for the few fields we need: memory per request stays constant, and a megabyte of
# embeddings never blocks the event loop in json.loads.
HEAD_LIMIT = 64 * 1024
TAIL_LIMIT = 8 * 1024

Decoder = Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts; None where the response did not say."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class BodySummary:
    """What a JSON response body says about the request."""

    model: str = ""
    response_id: str = ""
    usage: Usage | None = None
    broken: bool = False  # a whole body that is not JSON: logged as a bad response, even with a 200


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def read_usage(usage: Any) -> Usage | None:
    """Token counts from a usage object (OpenAI and Together spellings of cached tokens)."""
    if not isinstance(usage, dict):
        return None
    cached = _count(usage.get("cached_tokens"))
    details = usage.get("prompt_tokens_details")
    if cached is None and isinstance(details, dict):
        cached = _count(details.get("cached_tokens"))
    return Usage(
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        total_tokens=_count(usage.get("total_tokens")),
        cached_tokens=cached,
    )


def summarize_object(data: Any) -> BodySummary:
    """Model, id and usage of an already parsed response object."""
    if not isinstance(data, dict):
        return BodySummary()
    model, response_id = data.get("model"), data.get("id")
    return BodySummary(
        model=model if isinstance(model, str) else "",
        response_id=response_id if isinstance(response_id, str) else "",
        usage=read_usage(data.get("usage")),
    )


def summarize_json(body: bytes) -> BodySummary:
    """Model, id and usage of a whole JSON response body; marked broken when it is not JSON."""
    try:
        return summarize_object(json.loads(body))
    except (ValueError, RecursionError):
        return BodySummary(broken=bool(body))


_DECODER = json.JSONDecoder()
_KEY = r'"%s"\s*:\s*'


def _value_after(text: str, key: str, *, last: bool) -> Any:
    """The JSON value of the first (or last) occurrence of "key": in text, or None."""
    matches = list(re.finditer(_KEY % key, text)) if last else [re.search(_KEY % key, text)]
    match = matches[-1] if matches and matches[-1] is not None else None
    if match is None:
        return None
    try:
        return _DECODER.raw_decode(text, match.end())[0]
    except ValueError:
        return None


def summarize_large_json(head: bytes, tail: bytes) -> BodySummary:
    """Model, id and usage of a JSON body too large to keep, from its head and its tail."""
    # Top-level "model" and "id" come first and "usage" last in Together's and OpenAI's bodies;
    # inside string values these names are escaped (\"model\") and cannot match.
    head = head[:4096].decode("utf-8", errors="replace")
    tail = tail.decode("utf-8", errors="replace")
    model, response_id = _value_after(head, "model", last=False), _value_after(head, "id", last=False)
    return BodySummary(
        model=model if isinstance(model, str) else "",
        response_id=response_id if isinstance(response_id, str) else "",
        usage=read_usage(_value_after(tail, "usage", last=True)),
    )


def make_decoder(content_encoding: bytes | None) -> Decoder | None:
    """Decode a compressed body piece by piece; None for codings the proxy cannot read."""
    coding = (content_encoding or b"identity").strip().lower()
    if coding in (b"identity", b""):
        return _identity
    if coding in (b"gzip", b"x-gzip", b"deflate"):
        # 32 + MAX_WBITS reads both gzip and zlib headers (what servers send for "deflate").
        return zlib.decompressobj(32 + zlib.MAX_WBITS).decompress
    return None


def _identity(chunk: bytes) -> bytes:
    return chunk


class BodyCapture:
    """A decoded copy of a body as it passes: whole up to HEAD_LIMIT, else its head and its tail."""

    def __init__(self, decoder: Decoder | None, head_limit: int = HEAD_LIMIT) -> None:
        self.decoder = decoder
        self.head_limit = head_limit
        self.unreadable = decoder is None
        self.overflowed = False
        self._head = bytearray()
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        if self.decoder is None or self.unreadable:
            return
        try:
            data = self.decoder(chunk)
        except zlib.error:
            self.unreadable = True
            return
        room = self.head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self.overflowed = True
            self._tail = (self._tail + data)[-TAIL_LIMIT:]

    @property
    def head(self) -> bytes:
        return bytes(self._head)

    def summary(self) -> BodySummary:
        """What the JSON body says, read from whatever was kept."""
        if self.unreadable:
            return BodySummary()
        if not self.overflowed:
            return summarize_json(bytes(self._head))
        return summarize_large_json(bytes(self._head), self._tail)
