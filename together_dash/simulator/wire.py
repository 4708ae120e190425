"""Request and response plumbing on raw ASGI: just enough to stay fast on the hot path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"
SSE = b"text/event-stream;charset=utf-8"  # the exact value real streams carry (REC)

dumps_str = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(data: Any) -> bytes:
    """Compact JSON bytes, the way Together writes them."""
    return dumps_str(data).encode()


class Request:
    """The parts of an HTTP request the handlers need; the body is read before dispatch."""

    __slots__ = (
        "method",
        "path",
        "headers",
        "query_string",
        "body",
        "key",
        "params",
        "receive",
        "send",
        "scope",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        # ASGI servers give lower-case header names; duplicates keep the last value, which is fine here.
        self.headers: dict[bytes, bytes] = dict(scope["headers"])
        self.query_string: bytes = scope.get("query_string", b"")
        self.body = b""
        self.key = ""
        self.params: tuple[str, ...] = ()
        self.receive = receive
        self.send = send

    async def read_body(self) -> None:
        chunks: list[bytes] = []
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def json(self) -> Any:
        """The body as JSON; raises ValueError (caught by the app as a 400) when it is not."""
        if not self.body:
            raise ValueError("empty body")
        return json.loads(self.body)

    def header(self, name: bytes, default: str = "") -> str:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else default

    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.query_string.decode("latin-1")).items()}

    @property
    def host(self) -> str:
        host = self.header(b"host")
        if host:
            return host
        server = self.scope.get("server") or ("127.0.0.1", 80)
        return f"{server[0]}:{server[1]}"


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: bytes = JSON
    headers: Headers = field(default_factory=list)
    stream: AsyncIterator[bytes] | None = None  # when set, body is ignored and chunks are sent as produced


def json_response(data: Any, status: int = 200, headers: Headers | None = None) -> Response:
    return Response(status, dumps(data), JSON, headers if headers is not None else [])


async def send_response(send: Send, receive: Receive, response: Response, extra_headers: Headers) -> None:
    headers = [(b"content-type", response.content_type)]
    headers.extend(response.headers)
    headers.extend(extra_headers)
    if response.stream is None:
        headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
        return
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    # Watch for the client going away, so an abandoned 50 MB stream stops being produced.
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        async with contextlib.aclosing(response.stream) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                if gone.done():
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        gone.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


_ALNUM = string.ascii_letters + string.digits
_LOWER_ALNUM = string.ascii_lowercase + string.digits


def completion_id() -> str:
    """An id shaped like Together's, e.g. ogzjdpL-6Ng1vN-9f391a08f8af75e1."""
    head = "".join(random.choices(_ALNUM, k=13))
    return f"{head[:7]}-{head[7:]}-{random.getrandbits(64):016x}"


def tool_call_id() -> str:
    """An id shaped like Together's tool-call ids, e.g. call_yu1mxtmex7x48nximi9c8jpo."""
    return "call_" + "".join(random.choices(_LOWER_ALNUM, k=24))


def request_id() -> str:
    return f"{random.getrandbits(128):032x}"


def cf_ray() -> str:
    return f"{random.getrandbits(64):016x}-SJC"
