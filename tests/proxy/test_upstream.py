"""The proxy's upstream transport (upstream.py): httpx's interface over a lean keep-alive pool."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.waiting import async_wait_until
from together_dash.proxy.testing import ServedApp, serve
from together_dash.proxy.upstream import LeanTransport, proxy_transport

TIMEOUTS = httpx.Timeout(5.0).as_dict()


class Upstream:
    """A small HTTP server that reports the client port of each request and what it received."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.disconnects = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.ports.append(scope["client"][1])
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["path"] == "/slow":
            await self._slow(receive, send)
            return
        if scope["path"] == "/hang":
            await asyncio.wait_for(receive(), 10)  # until the client gives up
            return
        headers = dict(scope["headers"])
        payload = json.dumps({
            "body": body.decode(),
            "length": headers.get(b"content-length", b"").decode(),
            "chunked": headers.get(b"transfer-encoding", b"").decode(),
        }).encode()
        length = b"%d" % len(payload)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", length)]})
        await send({"type": "http.response.body", "body": payload})

    async def _slow(self, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        gone = asyncio.ensure_future(receive())
        for _ in range(200):
            if gone.done():
                self.disconnects += 1
                return
            await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
            await asyncio.sleep(0.01)  # a slow stream: the client has time to hang up mid-body
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, ServedApp]]:
    app = Upstream()
    with serve(app, lifespan="off") as server:
        yield app, server


async def fetch(transport: LeanTransport, method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
    request = httpx.Request(method, url, extensions={"timeout": TIMEOUTS}, **kwargs)
    response = await transport.handle_async_request(request)
    body = b"".join([chunk async for chunk in response.stream])
    await response.aclose()
    return response.status_code, body


def test_sequential_requests_share_one_keep_alive_connection(upstream: tuple[Upstream, ServedApp]) -> None:
    app, server = upstream

    async def three() -> None:
        transport = LeanTransport()
        for _ in range(3):
            await fetch(transport, "POST", f"{server.root_url}/echo", content=b"{}")
        await transport.aclose()

    asyncio.run(three())
    assert len(app.ports) == 3 and len(set(app.ports)) == 1


def test_a_response_closed_before_its_end_closes_its_connection_and_the_server_sees_it(
    upstream: tuple[Upstream, ServedApp],
) -> None:
    app, server = upstream

    async def abandon() -> None:
        transport = LeanTransport()
        request = httpx.Request("GET", f"{server.root_url}/slow", extensions={"timeout": TIMEOUTS})
        response = await transport.handle_async_request(request)
        async for _ in response.stream:
            break
        await response.aclose()
        await async_wait_until(lambda: app.disconnects == 1, message="the server did not see the hang-up")
        await fetch(transport, "POST", f"{server.root_url}/echo", content=b"{}")
        await transport.aclose()

    asyncio.run(abandon())
    assert app.disconnects == 1
    assert app.ports[0] != app.ports[1]  # the abandoned connection was not reused


def test_a_streamed_body_without_length_goes_up_chunked(upstream: tuple[Upstream, ServedApp]) -> None:
    _, server = upstream

    async def parts() -> AsyncIterator[bytes]:
        for part in (b"first,", b"second,", b"third"):
            yield part

    async def send_stream() -> bytes:
        transport = LeanTransport()
        _, body = await fetch(transport, "POST", f"{server.root_url}/echo", content=parts())
        await transport.aclose()
        return body

    seen = json.loads(asyncio.run(send_stream()))
    assert seen == {"body": "first,second,third", "length": "", "chunked": "chunked"}


def test_a_head_request_ends_with_its_headers(upstream: tuple[Upstream, ServedApp]) -> None:
    _, server = upstream

    async def head() -> tuple[int, bytes]:
        transport = LeanTransport()
        result = await fetch(transport, "HEAD", f"{server.root_url}/echo")
        await transport.aclose()
        return result

    assert asyncio.run(asyncio.wait_for(head(), 3)) == (200, b"")


def test_timeouts_and_refused_connections_raise_httpx_exceptions(
    upstream: tuple[Upstream, ServedApp],
) -> None:
    _, server = upstream

    async def failures() -> list[type[Exception]]:
        transport = LeanTransport()
        raised = []
        short_read = {**TIMEOUTS, "read": 0.2}
        hang = httpx.Request("GET", f"{server.root_url}/hang", extensions={"timeout": short_read})
        refused = httpx.Request("GET", "http://127.0.0.1:9/", extensions={"timeout": TIMEOUTS})
        for attempt in (hang, refused):
            try:
                await transport.handle_async_request(attempt)
            except httpx.TransportError as exc:
                raised.append(type(exc))
        await transport.aclose()
        return raised

    assert asyncio.run(failures()) == [httpx.ReadTimeout, httpx.ConnectError]


def test_an_http_proxy_in_the_environment_hands_over_to_httpxs_own_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    assert isinstance(proxy_transport("https://api.together.xyz/v1"), httpx.AsyncHTTPTransport)
    assert isinstance(proxy_transport("http://127.0.0.1:8001/v1"), LeanTransport)


def test_a_connection_given_back_goes_to_the_request_waiting_for_one(
    upstream: tuple[Upstream, ServedApp],
) -> None:
    app, server = upstream

    async def two_on_one_connection() -> tuple[int, bytes]:
        transport = LeanTransport(max_connections=1)
        first = await transport.handle_async_request(
            httpx.Request("POST", f"{server.root_url}/echo", content=b"{}", extensions={"timeout": TIMEOUTS}))
        waiting = asyncio.ensure_future(fetch(transport, "POST", f"{server.root_url}/echo", content=b"{}"))
        await asyncio.sleep(0)  # the second request now waits for the only connection
        assert not waiting.done()
        [_ async for _ in first.stream]
        await first.aclose()  # handed to the waiting request, not left idle until its pool timeout
        result = await asyncio.wait_for(waiting, 2)
        await transport.aclose()
        return result

    status, _ = asyncio.run(two_on_one_connection())
    assert status == 200
    assert len(app.ports) == 2 and len(set(app.ports)) == 1
