"""A lean HTTP/1.1 transport for the proxy's shared httpx.AsyncClient.

httpx's default pool (httpcore over anyio) spends its time in Python bookkeeping: every request scans
every pooled connection, twice over, with a poll() system call each, so at 64 concurrent clients the
pool itself becomes the bottleneck (bench/proxy_overhead.py measured p99 in the hundreds of ms). This
transport keeps httpx's API (Request, Response, Timeout, the exception classes) and does the wire work
with asyncio protocols and httptools' C parser, the same parser our ASGI server uses:

- one LIFO stack of idle keep-alive connections per origin, bounded; at most max_connections open, and
  a request waits for one at most the pool timeout (a released connection goes to the longest waiter);
- a request that may have reached the upstream is never sent twice: a GET or HEAD is retried once when
  a reused connection turns out closed before any byte came back; any other method only when the
  connection was seen closed before a byte of it was written, else UpstreamClosed (the proxy's 502);
- the request goes out in one write when its body is small and in memory, in pieces otherwise, each
  drained within the write timeout; an answer that comes before the body ended (a 413, a 400) stops
  the upload and is relayed as it came;
- outgoing header names must be tokens and values free of CR, LF and NUL (httpx.LocalProtocolError);
- the response body is handed over chunk by chunk as it arrives; past HIGH_WATER buffered bytes the
  socket stops reading, so a slow client slows the upstream instead of filling our memory;
- a response that was not read to its end closes its connection: the upstream sees the request cancelled.

Anything it does not speak (HTTP proxies from the environment, HTTP/2) is left to httpx's own transport;
see proxy_transport().
"""
from __future__ import annotations

import asyncio
import re
import ssl
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import httptools
import httpx

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
# A body up to this size goes out with its head in one write; a larger one in pieces of this size, so
# that an early answer stops it and each piece's wait for the socket is timed.
PIECE_BYTES = 64 * 1024
# RFC 9110 §9.2.2 calls PUT and DELETE idempotent too, but a DELETE on Together cancels or removes
# something that may bill; only reads are worth the risk of arriving twice.
RETRYABLE_METHODS = frozenset({"GET", "HEAD"})
Origin = tuple[str, str, int]

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_HEADER_NAME = re.compile(_TOKEN)
_HEADER_NAMES = re.compile(rb"%b(?:\n%b)*" % (_TOKEN, _TOKEN))  # joined by LF, which no token holds
_FORBIDDEN_IN_VALUE = re.compile(rb"[\r\n\x00]")


class UpstreamClosed(httpx.RemoteProtocolError):
    """The upstream closed the connection after the request went out: it may have been processed."""


class _NotSent(Exception):
    """The connection was seen closed before a byte of the request was written: safe to send again."""


def check_headers(headers: list[tuple[bytes, bytes]]) -> None:
    """Refuse a header that would split or corrupt the request head (no value in the message: secrets)."""
    if not headers:
        return
    # Two C-speed checks for the whole list; a name holding LF adds a separator, hence the count.
    names = b"\n".join([name for name, _ in headers])
    values = b"".join([value for _, value in headers])
    if (_HEADER_NAMES.fullmatch(names) and names.count(b"\n") == len(headers) - 1
            and not _FORBIDDEN_IN_VALUE.search(values)):
        return
    for name, value in headers:
        if not _HEADER_NAME.fullmatch(name):
            raise httpx.LocalProtocolError(f"invalid outgoing header name {name!r}")
        if _FORBIDDEN_IN_VALUE.search(value):
            shown = name.decode("latin-1")
            raise httpx.LocalProtocolError(f"outgoing header {shown!r} has CR, LF or NUL in its value")


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; parses responses as bytes arrive (httptools callbacks)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.paused = False
        self.error: Exception | None = None
        self.idle_since = 0.0
        self.upload: asyncio.Future[None] | None = None  # a streamed body going out, stopped by an answer
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = True
        self.received_any = False
        self.written = 0
        self.body_sent = False
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
        elif not self.headers_done:
            detail = f" ({exc})" if exc else ""
            self._fail(UpstreamClosed(f"upstream closed the connection after receiving the request{detail}"))
        elif not self.complete:
            message = "upstream closed the connection before the response ended"
            error = httpx.ReadError if exc is not None else httpx.RemoteProtocolError
            self._fail(error(f"{message} ({exc})" if exc else message))
        self._stop_upload()
        self._wake()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

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
        self._stop_upload()
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

    def _stop_upload(self) -> None:
        # An answer (or a closed connection) while a streamed body is still going out: send no more.
        if self.upload is not None and not self.upload.done():
            self.upload.cancel()

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

    @property
    def answered(self) -> bool:
        """The upstream answered, or hung up, before the request was all written: stop writing."""
        return self.headers_done or self.closed

    async def write(self, data: bytes | memoryview, timeout: float | None) -> None:
        """Hand data to the socket; wait (timed) while too much waits to go out."""
        if self.transport is None or self.closed:
            if self.written == 0:
                raise _NotSent
            if not self.headers_done:
                raise self.error or UpstreamClosed("upstream closed the connection after the request")
            return
        self.transport.write(data)
        self.written += len(data)
        while self.paused and not self.answered:
            left = self.transport.get_write_buffer_size()
            try:
                await self._wait(timeout)
            except TimeoutError:
                if self.transport.get_write_buffer_size() >= left:  # not a byte went out in `timeout`
                    raise httpx.WriteTimeout("upstream stopped reading the request body") from None

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
            if self.transport.get_write_buffer_size():
                self.transport.abort()  # an unsent rest of a body would keep the connection open
            else:
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
        reuse = (self._reusable and connection.complete and connection.keep_alive and connection.body_sent
                 and not connection.chunks)
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
        self._open: set[_Connection] = set()
        self._slots_taken = 0  # open connections plus connections being opened
        # Requests waiting for a connection: a released one (or, as None, its slot) goes to the first.
        self._waiters: deque[tuple[Origin, asyncio.Future[_Connection | None]]] = deque()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        check_headers(request.headers.raw)
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        origin = (request.url.scheme, request.url.host, request.url.port or _default_port(request.url.scheme))
        connection, reused = await self._acquire(origin, timeouts)
        try:
            await self._exchange(connection, request, timeouts)
        except (_NotSent, UpstreamClosed) as exc:
            self.release(origin, connection, reuse=False)
            if not _may_send_again(exc, request, reused, connection):
                raise
            # The upstream closed an idle keep-alive connection as we reused it: nothing was processed.
            connection, _ = await self._acquire(origin, timeouts, fresh=True)
            try:
                await self._exchange(connection, request, timeouts)
            except _NotSent:
                self.release(origin, connection, reuse=False)
                raise httpx.WriteError("upstream closed a new connection before the request") from None
            except UpstreamClosed as again:  # a plain RemoteProtocolError: it *was* sent again
                self.release(origin, connection, reuse=False)
                raise httpx.RemoteProtocolError(f"{again}, also when sent again") from None
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
        write_timeout = timeouts.get("write")
        if isinstance(request.stream, httpx.ByteStream):
            await self._send_content(connection, _request_head(request), request.content, write_timeout)
        else:
            chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
            head = _request_head(request)
            await self._send_stream(connection, head, request.stream, chunked, write_timeout)
        await connection.wait_headers(timeouts.get("read"))
        if request.method == "HEAD":
            connection.complete = True  # headers only, whatever Content-Length says

    async def _send_content(
        self, connection: _Connection, head: bytes, content: bytes, timeout: float | None
    ) -> None:
        if len(content) <= PIECE_BYTES:
            await connection.write(head + content, timeout)
            connection.body_sent = not connection.paused  # else the answer came before it all went out
            return
        await connection.write(head, timeout)
        view = memoryview(content)
        for start in range(0, len(content), PIECE_BYTES):
            if connection.answered:
                return  # relay the answer; the unsent rest never goes out
            await connection.write(view[start:start + PIECE_BYTES], timeout)
        connection.body_sent = not connection.paused

    async def _send_stream(
        self, connection: _Connection, head: bytes, stream: AsyncIterable[bytes], chunked: bool,
        timeout: float | None,
    ) -> None:
        await connection.write(head, timeout)
        # A task, so that an answer arriving while the body still comes in (from a slow client) stops it.
        upload = asyncio.ensure_future(_pump(connection, stream, chunked, timeout))
        connection.upload = upload
        try:
            await upload
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not upload.cancelled() or (task is not None and task.cancelling()):
                raise  # we were cancelled, not stopped by the upstream's answer
        finally:
            connection.upload = None

    # ---- the pool --------------------------------------------------------------------------------------

    async def _acquire(
        self, origin: Origin, timeouts: dict[str, Any], *, fresh: bool = False
    ) -> tuple[_Connection, bool]:
        if not fresh:
            connection = self._idle_connection(origin)
            if connection is not None:
                return connection, True
        if self._slots_taken < self.max_connections:
            self._slots_taken += 1
        elif not self._close_an_idle_connection():  # else the closed one's slot is ours
            handed = await self._wait_for_slot(origin, timeouts.get("pool"))
            if handed is not None:
                return handed, True
        try:
            connection = await self._connect(origin, timeouts.get("connect"))
        except BaseException:
            self._free_slot()
            raise
        self._open.add(connection)
        return connection, False

    async def _wait_for_slot(self, origin: Origin, timeout: float | None) -> _Connection | None:
        """A connection released for this origin, or None: a free slot to connect with."""
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append((origin, waiter))
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():  # handed over as the timeout struck: give back
                handed = waiter.result()
                if handed is None:
                    self._free_slot()
                else:
                    self.release(origin, handed, reuse=True)
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("no free upstream connection in time") from None
            raise

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

    def _close_an_idle_connection(self) -> bool:
        """Make room by closing the oldest idle connection (of any origin), if there is one."""
        for stack in self._idle.values():
            if stack:
                connection = stack.pop(0)
                self._idle_count -= 1
                connection.close()
                self._open.discard(connection)  # its slot passes to the caller
                return True
        return False

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
        """To a waiting request or the idle stack when it can carry another request, else closed."""
        if not reuse or connection.closed:
            self._forget(connection)
            return
        waiter = self._first_waiter()
        if waiter is not None:
            waiting_for, future = waiter
            if waiting_for == origin:
                future.set_result(connection)
            else:
                connection.close()
                self._open.discard(connection)
                future.set_result(None)  # its slot, to connect to the other origin
            return
        if self._idle_count >= self.max_keepalive_connections:
            self._forget(connection)
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(origin, []).append(connection)
        self._idle_count += 1

    def _first_waiter(self) -> tuple[Origin, asyncio.Future[_Connection | None]] | None:
        while self._waiters:
            origin, future = self._waiters.popleft()
            if not future.done():
                return origin, future
        return None

    def _forget(self, connection: _Connection) -> None:
        connection.close()
        if connection in self._open:
            self._open.discard(connection)
            self._free_slot()

    def _free_slot(self) -> None:
        waiter = self._first_waiter()
        if waiter is not None:
            waiter[1].set_result(None)  # the slot passes to the waiter, which connects
        else:
            self._slots_taken -= 1

    async def aclose(self) -> None:
        for connection in list(self._open):
            self._forget(connection)
        self._idle.clear()
        self._idle_count = 0


async def _pump(connection: _Connection, stream: AsyncIterable[bytes], chunked: bool, timeout: float | None
                ) -> None:
    """Write a streamed body as it comes (the task an early answer cancels)."""
    async for chunk in stream:
        if connection.answered:
            return
        if chunk:
            await connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk, timeout)
    if connection.answered:
        return
    if chunked:
        await connection.write(b"0\r\n\r\n", timeout)
    connection.body_sent = not connection.paused


def _may_send_again(exc: Exception, request: httpx.Request, reused: bool, connection: _Connection) -> bool:
    if isinstance(exc, _NotSent):
        return True  # not a byte of it left: the upstream cannot have seen it (a stream is untouched)
    stale = reused and not connection.received_any
    return stale and request.method in RETRYABLE_METHODS and isinstance(request.stream, httpx.ByteStream)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


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
