"""The proxy's upstream transports (ours, aiohttp's) through the real server, against scripted upstreams."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.waiting import wait_until
from together_dash.keys.models import TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.proxy.testing import RunningProxy, running_proxy
from together_dash.proxy.transport import proxy_transport

pytestmark = pytest.mark.django_db(transaction=True)

TRANSPORTS = ["lean", "aiohttp"]  # PROXY_UPSTREAM_TRANSPORT: ours (the default) and the library's

CHAT = {"model": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "messages": [{"role": "user", "content": "hi"}]}
CLOSED_MESSAGE = "Together closed the connection after receiving the request, before answering"


@dataclass
class Seen:
    """One request as the upstream read it off the wire."""

    line: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    connection: int


@dataclass
class RawUpstream:
    """An asyncio HTTP/1.1 server in a thread; `script` decides what each connection gets."""

    script: Callable[[RawUpstream, asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
    seen: list[Seen] = field(default_factory=list)
    closed_connections: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._connections = 0
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(5)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        try:
            await self.script(self, reader, writer, self._connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader, connection: int, *, body: bool = True) -> Seen:
        head = await reader.readuntil(b"\r\n\r\n")
        line, *lines = head[:-4].split(b"\r\n")
        headers = [(name.strip().lower(), value.strip()) for name, _, value in
                   (item.partition(b":") for item in lines)]
        names = dict(headers)
        content = b""
        if body and b"content-length" in names:
            content = await reader.readexactly(int(names[b"content-length"]))
        elif body and names.get(b"transfer-encoding") == b"chunked":
            while (size := int((await reader.readline()).strip(), 16)):
                content += await reader.readexactly(size)
                await reader.readline()
            await reader.readline()
        seen = Seen(line, headers, content, connection)
        self.seen.append(seen)
        return seen

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def answer(status: int = 200, body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%b\r\n%b"
            % (status, len(body), extra, body))


@pytest.fixture
def app_key(transactional_db: None) -> str:
    TogetherKey.create(name="main", secret="upstream-secret")
    return create_app_key("transport-tests")[1]


@pytest.fixture
def upstream_with() -> Iterator[Callable[..., RawUpstream]]:
    started: list[RawUpstream] = []

    def start(script: Callable[..., Awaitable[None]]) -> RawUpstream:
        started.append(RawUpstream(script))
        return started[-1]

    yield start
    for upstream in started:
        upstream.stop()


ProxyServer = Callable[..., contextlib.AbstractContextManager[RunningProxy]]


@pytest.fixture(params=TRANSPORTS)
def serve_proxy(request: pytest.FixtureRequest) -> ProxyServer:
    """running_proxy with each upstream transport in turn."""
    return functools.partial(running_proxy, upstream_transport=request.param)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def answer_first_then_drop(upstream: RawUpstream, reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter, connection: int) -> None:
    """Answers the first request of each connection; reads the second whole, then hangs up."""
    await upstream.read_request(reader, connection)
    writer.write(answer())
    await writer.drain()
    await upstream.read_request(reader, connection)


# ---- sent once -----------------------------------------------------------------------------------

def test_a_post_the_upstream_read_and_dropped_is_a_502_and_never_sent_twice(
    upstream_with: Callable[..., RawUpstream], app_key: str, serve_proxy: ProxyServer,
) -> None:
    upstream = upstream_with(answer_first_then_drop)
    with serve_proxy(upstream.base_url) as proxy:
        responses = [httpx.post(f"{proxy.base_url}/chat/completions", json=CHAT, headers=auth(app_key),
                                timeout=10) for _ in range(6)]

    assert len(upstream.seen) == 6  # one POST upstream per client request
    assert [response.status_code for response in responses] == [200, 502] * 3
    error = responses[1].json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"].startswith(CLOSED_MESSAGE)


def test_a_get_on_a_stale_connection_is_retried_once_and_succeeds(
    upstream_with: Callable[..., RawUpstream], app_key: str, serve_proxy: ProxyServer,
) -> None:
    upstream = upstream_with(answer_first_then_drop)
    with serve_proxy(upstream.base_url) as proxy:
        statuses = [httpx.get(f"{proxy.base_url}/models", headers=auth(app_key), timeout=10).status_code
                    for _ in range(3)]

    assert statuses == [200, 200, 200]
    # The first on connection 1; each later one dropped on the old connection, then sent on a new one.
    assert [seen.connection for seen in upstream.seen] == [1, 1, 2, 2, 3]


# ---- timeouts --------------------------------------------------------------------------------------

def test_an_upstream_that_never_accepts_is_a_connect_timeout(
    app_key: str, serve_proxy: ProxyServer,
) -> None:
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    port = blackhole.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # the only backlog slot: later SYNs wait
    try:
        with serve_proxy(f"http://127.0.0.1:{port}/v1", connect_timeout=0.3) as proxy:
            response = httpx.post(f"{proxy.base_url}/chat/completions", json=CHAT, headers=auth(app_key),
                                  timeout=10)
    finally:
        filler.close()
        blackhole.close()

    assert response.status_code == 504
    assert response.json()["error"]["message"].endswith("(ConnectTimeout)")


def test_a_silent_upstream_is_a_read_timeout(
    upstream_with: Callable[..., RawUpstream], app_key: str, serve_proxy: ProxyServer,
) -> None:
    async def silent(upstream: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     connection: int) -> None:
        await upstream.read_request(reader, connection)
        await reader.read()  # until the proxy gives up

    upstream = upstream_with(silent)
    with serve_proxy(upstream.base_url, timeout=0.3) as proxy:
        response = httpx.post(f"{proxy.base_url}/chat/completions", json=CHAT, headers=auth(app_key),
                              timeout=10)

    assert response.status_code == 504
    assert response.json()["error"]["message"].endswith("(ReadTimeout)")
    assert len(upstream.seen) == 1


def test_an_upstream_that_stops_reading_a_large_body_is_a_write_timeout(
    upstream_with: Callable[..., RawUpstream], app_key: str, serve_proxy: ProxyServer,
) -> None:
    reading_stopped = threading.Event()

    async def stops_reading(upstream: RawUpstream, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, connection: int) -> None:
        await upstream.read_request(reader, connection, body=False)
        writer.transport.pause_reading()
        await asyncio.get_running_loop().run_in_executor(None, reading_stopped.wait, 10)

    upstream = upstream_with(stops_reading)
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 48_000_000}]}  # more than socket buffers
    try:
        with serve_proxy(upstream.base_url, timeout=0.5) as proxy:
            response = httpx.post(f"{proxy.base_url}/chat/completions", json=big, headers=auth(app_key),
                                  timeout=30)
    finally:
        reading_stopped.set()

    assert response.status_code == 504
    assert response.json()["error"]["message"].endswith("(WriteTimeout)")


# ---- what is relayed ---------------------------------------------------------------------------------

def test_an_early_answer_during_an_upload_is_relayed_as_it_came(
    upstream_with: Callable[..., RawUpstream], app_key: str, serve_proxy: ProxyServer,
) -> None:
    refusal = b'{"error":{"message":"too big","type":"invalid_request_error","param":null,"code":null}}'

    async def refuses_early(upstream: RawUpstream, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, connection: int) -> None:
        await upstream.read_request(reader, connection, body=False)
        writer.write(answer(413, refusal, b"connection: close\r\n"))
        await writer.drain()
        writer.write_eof()
        while await reader.read(65536):  # a lingering close: read what still comes, then hang up
            pass

    upstream = upstream_with(refuses_early)
    with serve_proxy(upstream.base_url) as proxy:
        port = proxy.server.port
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"POST /v1/files/upload HTTP/1.1\r\nhost: x\r\n"
                           b"content-type: application/octet-stream\r\n"
                           b"authorization: Bearer %b\r\ncontent-length: 8000000\r\n\r\n" % app_key.encode())
            client.sendall(b"y" * 256_000)  # the rest never comes: the answer must not wait for it
            received = b""
            while refusal not in received:
                chunk = client.recv(65536)
                if not chunk:
                    break
                received += chunk

    assert received.startswith(b"HTTP/1.1 413 ")
    assert received.endswith(refusal)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_proxy_max_body_bytes_is_a_413_and_never_forwarded(
    upstream_with: Callable[..., RawUpstream], app_key: str, chunked: bool, serve_proxy: ProxyServer,
) -> None:
    async def answers(upstream: RawUpstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, connection: int) -> None:
        await upstream.read_request(reader, connection)
        writer.write(answer())

    upstream = upstream_with(answers)
    body = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}).encode()

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start:start + 1000]

    headers = {**auth(app_key), "content-type": "application/json"}
    with serve_proxy(upstream.base_url, max_body_bytes=4096) as proxy:
        response = httpx.post(f"{proxy.base_url}/chat/completions", content=pieces() if chunked else body,
                              headers=headers, timeout=10)
        small = httpx.post(f"{proxy.base_url}/chat/completions", json=CHAT, headers=auth(app_key), timeout=10)

    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and "4096" in error["message"]
    assert small.status_code == 200
    assert len(upstream.seen) == 1  # only the small one


def test_a_gzip_body_is_relayed_byte_for_byte(
    upstream_with: Callable[..., RawUpstream], app_key: str, serve_proxy: ProxyServer,
) -> None:
    compressed = gzip.compress(json.dumps({"id": "x", "object": "chat.completion", "choices": []}).encode())

    async def gzips(upstream: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    connection: int) -> None:
        await upstream.read_request(reader, connection)
        writer.write(answer(200, compressed, b"content-encoding: gzip\r\n"))

    upstream = upstream_with(gzips)
    headers = {**auth(app_key), "accept-encoding": "gzip"}
    with serve_proxy(upstream.base_url) as proxy, \
            httpx.stream("POST", f"{proxy.base_url}/chat/completions", json=CHAT, headers=headers,
                         timeout=10) as response:
        relayed = b"".join(response.iter_raw())

    assert response.headers["content-encoding"] == "gzip"
    assert relayed == compressed
    assert dict(upstream.seen[0].headers)[b"accept-encoding"] == b"gzip"


def test_a_stream_the_client_leaves_early_closes_its_upstream_connection(
    upstream_with: Callable[..., RawUpstream], app_key: str, serve_proxy: ProxyServer,
) -> None:
    async def slow_events(upstream: RawUpstream, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter, connection: int) -> None:
        await upstream.read_request(reader, connection)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        try:
            for _ in range(400):
                writer.write(b"%x\r\n%b\r\n" % (len(b"data: {}\n\n"), b"data: {}\n\n"))
                await writer.drain()
                await asyncio.sleep(0.02)
        finally:
            upstream.closed_connections += 1

    upstream = upstream_with(slow_events)
    with serve_proxy(upstream.base_url) as proxy:
        with httpx.stream("POST", f"{proxy.base_url}/chat/completions", json={**CHAT, "stream": True},
                          headers=auth(app_key), timeout=10) as response:
            next(response.iter_raw())
        wait_until(lambda: upstream.closed_connections == 1, timeout=5,
                   message="the upstream did not see its connection closed")


def test_an_http_proxy_from_the_environment_carries_the_upstream_requests(
    upstream_with: Callable[..., RawUpstream], app_key: str, monkeypatch: pytest.MonkeyPatch,
    serve_proxy: ProxyServer,
) -> None:
    async def forward_proxy(upstream: RawUpstream, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, connection: int) -> None:
        await upstream.read_request(reader, connection)
        writer.write(answer())

    http_proxy = upstream_with(forward_proxy)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{http_proxy.port}")
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    # A name only the HTTP proxy can reach: a direct connection would fail to resolve it.
    with serve_proxy("http://together-upstream.invalid/v1") as proxy:
        response = httpx.post(f"{proxy.base_url}/chat/completions", json=CHAT, headers=auth(app_key),
                              timeout=10, trust_env=False)  # the test client goes direct

    assert response.status_code == 200
    assert [seen.line for seen in http_proxy.seen] == [
        b"POST http://together-upstream.invalid/v1/chat/completions HTTP/1.1"
    ]


@pytest.mark.parametrize("header", [b"x-note: a\rinjected: yes", b"x-note: a\ninjected: yes",
                                    b"x-note: a\r\n injected: yes"], ids=["cr", "lf", "obs-fold"])
def test_a_client_header_with_cr_or_lf_never_reaches_the_upstream(
    upstream_with: Callable[..., RawUpstream], app_key: str, header: bytes, serve_proxy: ProxyServer,
) -> None:
    async def answers(upstream: RawUpstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, connection: int) -> None:
        await upstream.read_request(reader, connection)
        writer.write(answer())

    upstream = upstream_with(answers)
    body = json.dumps(CHAT).encode()
    with serve_proxy(upstream.base_url) as proxy, \
            socket.create_connection(("127.0.0.1", proxy.server.port), timeout=10) as client:
        client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                       b"content-type: application/json\r\n"
                       b"authorization: Bearer %b\r\n%b\r\ncontent-length: %d\r\n\r\n%b"
                       % (app_key.encode(), header, len(body), body))
        status_line = client.recv(65536).split(b"\r\n", 1)[0]

    assert status_line.startswith(b"HTTP/1.1 400")  # our ASGI server (httptools) refuses the request
    assert upstream.seen == []


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("header", [(b"x-note", b"a\r\ninjected: yes"), (b"x-note", b"a\rb"),
                                    (b"x-note", b"a\nb"), (b"x-note", b"a\x00b"), (b"x note", b"a"),
                                    (b"x-note:", b"a"), (b"", b"a")],
                         ids=["crlf", "cr", "lf", "nul", "space-in-name", "colon-in-name", "empty-name"])
def test_the_transport_refuses_to_write_a_header_that_would_corrupt_the_request(
    upstream_with: Callable[..., RawUpstream], transport: str, header: tuple[bytes, bytes],
) -> None:
    async def answers(upstream: RawUpstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, connection: int) -> None:
        await upstream.read_request(reader, connection)
        writer.write(answer())

    upstream = upstream_with(answers)

    async def send() -> None:
        sender = proxy_transport(transport, upstream.base_url)
        request = httpx.Request("GET", f"{upstream.base_url}/models", headers=[header])
        try:
            with pytest.raises(httpx.LocalProtocolError, match="header"):
                await sender.handle_async_request(request)
        finally:
            await sender.aclose()

    asyncio.run(send())
    assert upstream.seen == []


def test_an_upstream_key_that_would_corrupt_the_request_is_a_502_naming_the_header_not_the_key(
    upstream_with: Callable[..., RawUpstream], serve_proxy: ProxyServer,
) -> None:
    async def answers(upstream: RawUpstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, connection: int) -> None:
        await upstream.read_request(reader, connection)
        writer.write(answer())

    upstream = upstream_with(answers)
    TogetherKey.create(name="pasted with a newline", secret="upstream-secret\ninjected: yes")
    app_key = create_app_key("transport-tests")[1]
    with serve_proxy(upstream.base_url) as proxy:
        response = httpx.post(f"{proxy.base_url}/chat/completions", json=CHAT, headers=auth(app_key),
                              timeout=10)

    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert message.startswith("The proxy refused to send the request to Together")
    assert "authorization" in message.lower() and "upstream-secret" not in message
    assert upstream.seen == []


# ---- the pool --------------------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_a_request_waits_for_a_busy_connection_at_most_the_pool_timeout(
    upstream_with: Callable[..., RawUpstream], app_key: str, serve_proxy: ProxyServer,
) -> None:
    released = threading.Event()

    async def streams_until_released(upstream: RawUpstream, reader: asyncio.StreamReader,
                                     writer: asyncio.StreamWriter, connection: int) -> None:
        while True:
            seen = await upstream.read_request(reader, connection)
            if b'"stream": true' not in seen.body and b'"stream":true' not in seen.body:
                writer.write(answer())
                continue
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            event = b"data: {}\n\n"
            while not released.is_set():  # an event well within the read timeout, until released
                writer.write(b"%x\r\n%b\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(0.02)
            writer.write(b"0\r\n\r\n")

    upstream = upstream_with(streams_until_released)
    with serve_proxy(upstream.base_url, max_connections=1, timeout=1.0) as proxy:
        url = f"{proxy.base_url}/chat/completions"
        with httpx.stream("POST", url, json={**CHAT, "stream": True}, headers=auth(app_key),
                          timeout=10) as busy:
            events = busy.iter_raw()
            next(events)  # the only upstream connection is now busy with this stream
            started = time.monotonic()
            waited = httpx.post(url, json=CHAT, headers=auth(app_key), timeout=10)
            waited_for = time.monotonic() - started
            released.set()
            b"".join(events)
        after = httpx.post(url, json=CHAT, headers=auth(app_key), timeout=10)

    assert waited.status_code == 504
    assert waited.json()["error"]["message"].endswith("(PoolTimeout)")
    assert 0.9 < waited_for < 5
    assert after.status_code == 200  # the stream gave its connection back
    assert len(upstream.seen) == 2  # the one that timed out waiting never went upstream


def test_a_post_after_the_upstream_closed_an_idle_connection_goes_out_on_a_new_one(
    upstream_with: Callable[..., RawUpstream], app_key: str, serve_proxy: ProxyServer,
) -> None:
    async def answers_then_hangs_up(upstream: RawUpstream, reader: asyncio.StreamReader,
                                    writer: asyncio.StreamWriter, connection: int) -> None:
        await upstream.read_request(reader, connection)
        writer.write(answer())  # keep-alive announced, then the connection closed while idle
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        upstream.closed_connections += 1

    upstream = upstream_with(answers_then_hangs_up)
    with serve_proxy(upstream.base_url) as proxy:
        url = f"{proxy.base_url}/chat/completions"
        first = httpx.post(url, json=CHAT, headers=auth(app_key), timeout=10)
        wait_until(lambda: upstream.closed_connections == 1, timeout=5, message="the upstream kept it open")
        second = httpx.post(url, json=CHAT, headers=auth(app_key), timeout=10)

    assert (first.status_code, second.status_code) == (200, 200)
    assert [seen.connection for seen in upstream.seen] == [1, 2]
