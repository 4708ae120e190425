"""A lean HTTP/1.1 transport for the proxy's shared httpx.AsyncClient.

httpx's default pool (httpcore over anyio) spends its time in Python bookkeeping: every request scans
every pooled connection, twice over, with a poll() system call each, so at 64 concurrent clients the
pool itself becomes the bottleneck (bench/proxy_overhead.py measured p99 in the hundreds of ms). This
transport keeps httpx's API (Request, Response, Timeout, the exception classes) and does the wire work
with asyncio protocols and httptools' C parser, the same parser our ASGI server uses:

- one LIFO stack of idle keep-alive connections per origin, bounded; a semaphore bounds all connections;
- the request goes out in one write when its body is in memory, chunked when it is a stream;
- the response body is handed over chunk by chunk as it arrives; past HIGH_WATER buffered bytes the
  socket stops reading, so a slow client slows the upstream instead of filling our memory;
- a response that was not read to its end closes its connection: the upstream sees the request cancelled.

Anything it does not speak (HTTP proxies from the environment, HTTP/2) is left to httpx's own transport;
see proxy_transport().
"""
from __future__ import annotations

import asyncio
import ssl
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httptools
import httpx

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
Origin = tuple[str, str, int]


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; parses responses as bytes arrive (httptools callbacks)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.error: Exception | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._can_write: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = True
        self.received_any = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0

    # ---- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed response from upstream: {exc}"))
            self.close()
            return
        if self.buffered > HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and self._reads_to_close():
            self.complete, self.keep_alive = True, False  # a body delimited by the end of the connection
        elif not self.complete:
            message = "upstream closed the connection before the response ended"
            error = httpx.ReadError if exc is not None else httpx.RemoteProtocolError
            self._fail(error(f"{message} ({exc})" if exc else message))
        self._wake()
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def pause_writing(self) -> None:
        self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    # ---- httptools callbacks ---------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.headers = []  # informational (100 Continue): the real response follows
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        self._wake()

    def on_message_complete(self) -> None:
        if self.headers_done:
            self.complete = True
            self._wake()

    # ---- used by the transport -------------------------------------------------------------------------

    def _reads_to_close(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout: float | None) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._waiter
        finally:
            self._waiter = None

    def usable(self, now: float, expiry: float) -> bool:
        return not self.closed and self.error is None and now - self.idle_since < expiry

    def prepare(self) -> None:
        self._reset()

    async def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise httpx.WriteError("upstream connection closed")
        self.transport.write(data)
        if self._can_write is not None and not self._can_write.done():
            await self._can_write

    async def wait_headers(self, timeout: float | None) -> None:
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            try:
                await self._wait(timeout)
            except TimeoutError:
                raise httpx.ReadTimeout("upstream sent no response in time") from None

    async def next_chunk(self, timeout: float | None) -> bytes:
        """The next piece of the body; b"" at its end."""
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self.buffered < LOW_WATER and self.transport is not None and not self.closed:
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            try:
                await self._wait(timeout)
            except TimeoutError:
                raise httpx.ReadTimeout("upstream stopped sending the response body") from None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _ResponseBody(httpx.AsyncByteStream):
    """The body of one response; closing it early closes (cancels) its connection."""

    def __init__(
        self, pool: LeanTransport, origin: Origin, connection: _Connection, read_timeout: float | None,
        reusable: bool,
    ) -> None:
        self._pool = pool
        self._origin = origin
        self._connection = connection
        self._read_timeout = read_timeout
        self._reusable = reusable
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._connection.next_chunk(self._read_timeout)
            if not chunk:
                return
            yield chunk

    async def aclose(self) -> None:
        if self._released:
            return
        self._released = True
        connection = self._connection
        reuse = self._reusable and connection.complete and connection.keep_alive and not connection.chunks
        self._pool.release(self._origin, connection, reuse=reuse)


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive transport with a cheap pool (see the module docstring)."""

    def __init__(
        self,
        *,
        max_connections: int = 512,
        max_keepalive_connections: int = 128,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.max_keepalive_connections = max_keepalive_connections
        self.keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._idle_count = 0
        self._slots: asyncio.Semaphore | None = None
        self._open: set[_Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        origin = (request.url.scheme, request.url.host, request.url.port or _default_port(request.url.scheme))
        connection, reused = await self._acquire(origin, timeouts)
        try:
            await self._exchange(connection, request, timeouts)
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
            self.release(origin, connection, reuse=False)
            if not reused or connection.received_any or not _replayable(request):
                raise
            # The server closed an idle keep-alive connection as we reused it: nothing was processed.
            connection, _ = await self._acquire(origin, timeouts, fresh=True)
            try:
                await self._exchange(connection, request, timeouts)
            except BaseException:
                self.release(origin, connection, reuse=False)
                raise
        except BaseException:
            self.release(origin, connection, reuse=False)
            raise
        reusable = request.method != "HEAD"  # a HEAD answer may announce a body that never comes
        body = _ResponseBody(self, origin, connection, timeouts.get("read"), reusable=reusable)
        return httpx.Response(
            connection.status,
            headers=connection.headers,
            stream=body,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def _exchange(
        self, connection: _Connection, request: httpx.Request, timeouts: dict[str, Any]
    ) -> None:
        connection.prepare()
        await self._send(connection, request)
        await connection.wait_headers(timeouts.get("read"))
        if request.method == "HEAD":
            connection.complete = True  # headers only, whatever Content-Length says

    async def _send(self, connection: _Connection, request: httpx.Request) -> None:
        head = _request_head(request)
        if isinstance(request.stream, httpx.ByteStream):
            await connection.write(head + request.content)
            return
        await connection.write(head)
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        async for chunk in request.stream:  # type: ignore[union-attr]
            if chunk:
                await connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            await connection.write(b"0\r\n\r\n")

    # ---- the pool --------------------------------------------------------------------------------------

    async def _acquire(
        self, origin: Origin, timeouts: dict[str, Any], *, fresh: bool = False
    ) -> tuple[_Connection, bool]:
        if not fresh:
            connection = self._idle_connection(origin)
            if connection is not None:
                return connection, True
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no free upstream connection in time") from None
        try:
            connection = await self._connect(origin, timeouts.get("connect"))
        except BaseException:
            self._slots.release()
            raise
        self._open.add(connection)
        return connection, False

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        stack = self._idle.get(origin)
        now = time.monotonic()
        while stack:
            connection = stack.pop()
            self._idle_count -= 1
            if connection.usable(now, self.keepalive_expiry):
                return connection
            self._forget(connection)
        return None

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._tls() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        return connection

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
            self._ssl_context.set_alpn_protocols(["http/1.1"])
        return self._ssl_context

    def release(self, origin: Origin, connection: _Connection, *, reuse: bool) -> None:
        """Back to the idle stack when it can carry another request, else closed."""
        if reuse and not connection.closed and self._idle_count < self.max_keepalive_connections:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(origin, []).append(connection)
            self._idle_count += 1
            return
        self._forget(connection)

    def _forget(self, connection: _Connection) -> None:
        connection.close()
        if connection in self._open:
            self._open.discard(connection)
            if self._slots is not None:
                self._slots.release()

    async def aclose(self) -> None:
        for connection in list(self._open):
            self._forget(connection)
        self._idle.clear()
        self._idle_count = 0


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _replayable(request: httpx.Request) -> bool:
    return isinstance(request.stream, httpx.ByteStream)


def _request_head(request: httpx.Request) -> bytes:
    lines = [b"%b %b HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
    lines.extend(b"%b: %b\r\n" % (name, value) for name, value in request.headers.raw)
    lines.append(b"\r\n")
    return b"".join(lines)


def proxy_transport(base_url: str, **limits: Any) -> httpx.AsyncBaseTransport:
    """The lean transport, unless the environment routes the upstream through an HTTP proxy."""
    url = httpx.URL(base_url)
    if url.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(url.host):
        return httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=limits.get("max_connections"),
                                max_keepalive_connections=limits.get("max_keepalive_connections")),
            proxy=urllib.request.getproxies()[url.scheme],
        )
    return LeanTransport(**limits)
