"""Watch a server-sent event stream as it passes through, without ever holding the whole of it.

From the stream the proxy learns the time to the first event, the model served, the usage (on the last
chunk) and whether [DONE] arrived. When the proxy itself asked upstream for usage, an OpenAI-style
usage-only chunk (choices: []) that the client did not ask for is taken out; every other byte passes
unchanged and in the chunking upstream chose.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from together_dash.proxy.capture import Decoder, Usage, make_decoder, read_usage

# A line longer than this is not an event we can read; it is passed on and no longer watched.
MAX_LINE = 1024 * 1024
MAX_ERROR_EVENT = 64 * 1024
_NULL_USAGE = (b'"usage":null', b'"usage": null')


def _has_usage_object(data: bytes) -> bool:
    """True when some "usage" in data is not null (fast: no parsing)."""
    total = data.count(b'"usage"')
    return total > 0 and total > sum(data.count(null) for null in _NULL_USAGE)


def _is_interesting(data: bytes) -> bool:
    return b"[DONE]" in data or b'"error"' in data or _has_usage_object(data)


class SseWatcher:
    """Reads model, usage, first-event time and [DONE] from an event stream, chunk by chunk."""

    def __init__(
        self,
        *,
        strip_usage_only: bool = False,
        content_encoding: bytes | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.first_event_at: float | None = None
        self.model = ""
        self.response_id = ""
        self.usage: Usage | None = None
        self.done = False
        self.error_event: bytes = b""
        self.error_status: int | None = None
        self.stripped = 0
        identity = content_encoding in (None, b"", b"identity")
        # A compressed stream is watched through a decoder but never edited; an unknown coding is not read.
        self._decoder: Decoder | None = None if identity else make_decoder(content_encoding)
        self.readable = identity or self._decoder is not None
        self._strip = strip_usage_only and identity
        self._clock = clock
        self._pending = b""
        self._drop_blank = False

    def feed(self, chunk: bytes) -> bytes:
        """Watch one upstream chunk; return the bytes to send to the client now."""
        if self._strip:
            return self._filter(chunk)
        if self.readable:
            self._watch(self._decoder(chunk) if self._decoder else chunk)
        return chunk

    def finish(self) -> bytes:
        """Watch an unterminated last line; return what was still held back for the client."""
        rest, self._pending = self._pending, b""
        if not rest:
            return b""
        dropped = self._line(rest.rstrip(b"\r"))
        # Without stripping the rest already went out with its chunk.
        return rest if self._strip and not dropped else b""

    # ---- watching ----------------------------------------------------------------------------------

    def _split(self, data: bytes) -> bytes:
        """Complete lines of pending + data; keep the unterminated rest pending."""
        if self._pending:
            data = self._pending + data
        cut = data.rfind(b"\n") + 1
        self._pending = data[cut:]
        if len(self._pending) > MAX_LINE:
            self._pending = b""
            self._strip = False  # from here on bytes pass as they come
        return data[:cut]

    def _watch(self, data: bytes) -> None:
        complete = self._split(data)
        # After the first event only usage, errors and [DONE] matter; skip plain token chunks fast.
        if not complete or (self.first_event_at is not None and not _is_interesting(complete)):
            return
        for line in complete.split(b"\n"):
            self._line(line.rstrip(b"\r"))

    def _filter(self, chunk: bytes) -> bytes:
        held = self._pending
        complete = self._split(chunk)
        if not self._strip:  # an overlong line ended stripping: release everything held
            self._watch_lines(held + chunk)
            return held + chunk
        if not complete:
            return b""
        if self.first_event_at is not None and not self._drop_blank and not _is_interesting(complete):
            return complete  # plain token chunks: nothing to read, nothing to take out
        kept: list[bytes] = []
        dropped = False
        for line in complete.splitlines(keepends=True):
            if self._drop_blank and not line.strip():
                self._drop_blank, dropped = False, True
                continue
            self._drop_blank = False
            if self._line(line.rstrip(b"\r\n")):
                self._drop_blank = dropped = True
                continue
            kept.append(line)
        return b"".join(kept) if dropped else complete

    def _watch_lines(self, data: bytes) -> None:
        for line in data.split(b"\n"):
            self._line(line.rstrip(b"\r"))

    def _line(self, line: bytes) -> bool:
        """Read one line; True when it is a usage-only event the client did not ask for."""
        if not line.startswith(b"data:"):
            return False
        payload = line[5:].strip()
        first = self.first_event_at is None
        if first:
            self.first_event_at = self._clock()
        if payload == b"[DONE]":
            self.done = True
            return False
        if first:
            return self._event(payload, first=True)
        if _is_interesting(payload):
            return self._event(payload, first=False)
        return False

    def _event(self, payload: bytes, *, first: bool) -> bool:
        try:
            data: Any = json.loads(payload)
        except (ValueError, RecursionError):
            return False
        if not isinstance(data, dict):
            return False
        if first:
            self._read_identity(data)
        if "error" in data:
            self.error_event = payload[:MAX_ERROR_EVENT]
            self.error_status = _status_of(data["error"])
        usage = read_usage(data.get("usage"))
        if usage is None:
            return False
        self.usage = usage
        usage_only = data.get("choices") == []
        if usage_only and self._strip:
            self.stripped += 1
            return True
        return False

    def _read_identity(self, data: dict) -> None:
        model, response_id = data.get("model"), data.get("id")
        self.model = model if isinstance(model, str) else ""
        self.response_id = response_id if isinstance(response_id, str) else ""


def _status_of(error: Any) -> int:
    """The HTTP status an in-stream error stands for: its numeric code if it has one, else 500."""
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    return code if isinstance(code, int) and 400 <= code <= 599 else 500
