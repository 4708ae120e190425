"""The proxy's upstream transports by name (PROXY_UPSTREAM_TRANSPORT), and the aiohttp one.

The proxy talks to an httpx.AsyncBaseTransport (tests inject their own). By default it is ours
(upstream.py); `aiohttp` is the library alternative kept selectable: httpx's Request, Response and
exceptions over aiohttp's client, the one the official SDKs offer for high concurrency, with the same
guarantees as ours at about twice its p99 and CPU at 64 clients (BENCHMARKS.md, "Upstream transport").
What it adds to a plain aiohttp session:

- bodies are relayed as they came: no automatic decompression, no headers of aiohttp's own;
- a request that may have reached the upstream is never sent twice: only GET and HEAD may be retried
  (once, by aiohttp, on a stale pooled connection); for any other method a connection closed after the
  request went out is UpstreamClosed, which the proxy answers with a 502;
- connect, write, read and pool timeouts all apply (aiohttp has no write timeout: large bodies go up
  in pieces and each piece's write is timed);
- outgoing headers are checked as ours checks them (aiohttp refuses only CR and LF, as a ValueError);
- an upstream that answers before the upload ended (a 413, a 400) is relayed as it answered;
- a response closed before its end closes its connection: the upstream sees the request cancelled.

HTTP(S)_PROXY and NO_PROXY from the environment are honoured (aiohttp's trust_env).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import aiohttp
import httpx
import yarl
from aiohttp import client_exceptions as aio

from together_dash.proxy import upstream
from together_dash.proxy.upstream import RETRYABLE_METHODS, UpstreamClosed, check_headers

# Up to this size a body goes up in one write that never waits (asyncio buffers it); above it, in
# pieces of this size, each written within the write timeout.
PIECE_BYTES = 64 * 1024
# aiohttp would add these when absent; the upstream must see the client's headers, not ours.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


def proxy_transport(
    kind: str, base_url: str, *, max_connections: int = 512, keepalive_expiry: float = 5.0
) -> httpx.AsyncBaseTransport:
    """The proxy's transport (PROXY_UPSTREAM_TRANSPORT): ours, aiohttp's, or httpx's own pool."""
    if kind == "lean":
        return upstream.proxy_transport(base_url, max_connections=max_connections,
                                        keepalive_expiry=keepalive_expiry)
    if kind == "aiohttp":
        return AiohttpUpstream(max_connections=max_connections, keepalive_expiry=keepalive_expiry)
    if kind == "httpx":
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                              keepalive_expiry=keepalive_expiry)
        return httpx.AsyncHTTPTransport(limits=limits, trust_env=True)
    raise ValueError(f"PROXY_UPSTREAM_TRANSPORT={kind!r}: use lean, aiohttp or httpx")


class AiohttpUpstream(httpx.AsyncBaseTransport):
    """httpx's transport interface over one aiohttp ClientSession (see the module docstring)."""

    def __init__(self, *, max_connections: int = 512, keepalive_expiry: float = 5.0) -> None:
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        # Most requests share a few URLs and one set of timeouts: parse and build them once.
        self._urls: dict[str, yarl.URL] = {}
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _open_session(self) -> aiohttp.ClientSession:
        # Created on first use: aiohttp binds a session to the running event loop.
        connector = aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=self.keepalive_expiry)
        return aiohttp.ClientSession(
            connector=connector, trust_env=True, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_NO_AUTO_HEADERS, timeout=aiohttp.ClientTimeout(total=None),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        check_headers(request.headers.raw)  # aiohttp checks only CR and LF, and as a ValueError
        if self._session is None:
            self._session = self._open_session()
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        upload = _Upload.of(request, timeouts.get("write"))
        started = time.monotonic()
        with _mapped(request, timeouts, started, upload):
            response = await self._session.request(
                request.method, self._url(request), headers=_outgoing_headers(request),
                data=upload.data if upload else request.content or None,
                allow_redirects=False, timeout=self._client_timeout(timeouts),
                middlewares=() if request.method in RETRYABLE_METHODS else (_sent_once,),
            )
        if upload is not None:
            upload.answered()
        return httpx.Response(
            response.status, headers=response.raw_headers, stream=_ResponseBody(response, upload),
            request=request, extensions={"http_version": b"HTTP/1.1"},
        )

    def _url(self, request: httpx.Request) -> yarl.URL:
        raw = str(request.url)
        url = self._urls.get(raw)
        if url is None:
            if len(self._urls) >= 1024:
                self._urls.clear()
            url = self._urls[raw] = yarl.URL(raw, encoded=True)  # as the client wrote it: no re-quoting
        return url

    def _client_timeout(self, timeouts: dict[str, float | None]) -> aiohttp.ClientTimeout:
        key = (timeouts.get("connect"), timeouts.get("read"), timeouts.get("write"), timeouts.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            if len(self._timeouts) >= 64:
                self._timeouts.clear()
            timeout = self._timeouts[key] = _client_timeout(timeouts)
        return timeout

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _client_timeout(timeouts: dict[str, float | None]) -> aiohttp.ClientTimeout:
    # aiohttp's `connect` covers waiting for a free pool slot and then connecting; sock_connect the
    # connecting alone; sock_read each wait for response bytes (it starts once the body is sent). So
    # that the wait for a slot stays within the pool timeout, `connect` is the pool timeout: the
    # connecting then has what the wait left of it, at most sock_connect (the pool timeout is the
    # overall timeout by default, far above the connect timeout).
    return aiohttp.ClientTimeout(
        total=None, connect=timeouts.get("pool"), sock_connect=timeouts.get("connect"),
        sock_read=timeouts.get("read"),
    )


def _outgoing_headers(request: httpx.Request) -> list[tuple[str, str]]:
    # aiohttp frames the body itself (Content-Length, or chunked when the length is unknown).
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in request.headers.raw if name.lower() != b"transfer-encoding"
    ]


async def _sent_once(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
    """A client middleware that keeps aiohttp from sending a PUT, DELETE or OPTIONS again."""
    try:
        return await handler(request)
    except (aio.ClientConnectorError, aio.ConnectionTimeoutError):
        raise  # never connected: nothing was sent
    except (aio.ServerDisconnectedError, aio.ClientOSError) as exc:
        # aiohttp retries these for the methods it deems idempotent; any other ClientError it raises.
        raise _NotRetried(str(exc)) from exc


class _NotRetried(aio.ClientError):
    """A disconnect after sending that aiohttp must not retry."""


class _Upload:
    """A large or streamed request body handed to aiohttp piece by piece, each write timed."""

    def __init__(self, source: AsyncIterable[bytes], write_timeout: float | None) -> None:
        self._source = source
        self._write_timeout = write_timeout
        self._task = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = None
        self.expired = False
        self.is_answered = False
        self.finished = False
        self.data = self._pieces()

    @classmethod
    def of(cls, request: httpx.Request, write_timeout: float | None) -> _Upload | None:
        if not isinstance(request.stream, httpx.ByteStream):
            return cls(request.stream, write_timeout)  # type: ignore[arg-type]
        if len(request.content) > PIECE_BYTES:
            return cls(_slices(request.content), write_timeout)
        return None

    async def _pieces(self) -> AsyncIterator[bytes]:
        async for chunk in self._source:
            if self.is_answered:
                # The upstream answered before the body ended: send no more; closing the response
                # cancels this wait and closes the connection.
                await asyncio.get_running_loop().create_future()
            if not chunk:
                continue
            self._arm()
            yield chunk  # aiohttp asks for the next piece once this one is written
            self._disarm()
        self.finished = True

    def _arm(self) -> None:
        if self._write_timeout is not None and self._task is not None:
            self._timer = asyncio.get_running_loop().call_later(self._write_timeout, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        if not self.is_answered and self._task is not None:
            self.expired = True
            self._task.cancel()

    def answered(self) -> None:
        self.is_answered = True
        self._disarm()


async def _slices(content: bytes) -> AsyncIterator[bytes]:
    view = memoryview(content)
    for start in range(0, len(content), PIECE_BYTES):
        yield bytes(view[start:start + PIECE_BYTES])


class _ResponseBody(httpx.AsyncByteStream):
    """The body as it arrives; closing it before its end closes the connection instead of reusing it."""

    def __init__(self, response: aiohttp.ClientResponse, upload: _Upload | None) -> None:
        self._response = response
        self._upload = upload

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except aio.SocketTimeoutError:
            raise httpx.ReadTimeout("upstream stopped sending the response body") from None
        except (aio.ClientPayloadError, aio.ClientConnectionError) as exc:
            raise httpx.ReadError(f"upstream broke off the response body: {exc}") from None

    async def aclose(self) -> None:
        response = self._response
        upload_done = self._upload is None or self._upload.finished
        if response.content.at_eof() and upload_done and response.content.exception() is None:
            response.release()
        else:
            response.close()


class _mapped:
    """aiohttp's exceptions as httpx's, as the proxy (and httpx's own transport) raise them."""

    def __init__(
        self, request: httpx.Request, timeouts: dict[str, float | None], started: float,
        upload: _Upload | None,
    ) -> None:
        self._request = request
        self._timeouts = timeouts
        self._started = started
        self._upload = upload

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            return False
        upload = self._upload
        if isinstance(exc, asyncio.CancelledError) and upload is not None and upload.expired:
            task = asyncio.current_task()
            if task is not None and task.uncancel() == 0:
                raise httpx.WriteTimeout("upstream stopped reading the request body", request=self._request)
            return False
        mapped = self._map(exc)
        if mapped is None:
            return False
        raise mapped from exc

    def _map(self, exc: BaseException) -> httpx.TransportError | None:
        found = self._classify(exc)
        if found is None:
            return None
        kind, message = found
        return kind(message, request=self._request)

    def _classify(self, exc: BaseException) -> tuple[type[httpx.TransportError], str] | None:
        host = self._request.url.host
        if isinstance(exc, aio.ConnectionTimeoutError):
            pool = self._timeouts.get("pool")
            if pool is not None and time.monotonic() - self._started >= pool:
                return httpx.PoolTimeout, "no free upstream connection in time"
            return httpx.ConnectTimeout, f"connecting to {host} timed out"
        if isinstance(exc, aio.SocketTimeoutError):
            return httpx.ReadTimeout, "upstream sent no response in time"
        if isinstance(exc, aio.ClientProxyConnectionError):
            return httpx.ProxyError, f"cannot connect to the HTTP proxy: {exc}"
        if isinstance(exc, aio.ClientConnectorError):
            return httpx.ConnectError, f"cannot connect to {host}: {exc.os_error}"
        if isinstance(exc, aio.InvalidURL | aio.NonHttpUrlClientError):
            return httpx.UnsupportedProtocol, str(exc)
        if isinstance(exc, aio.ClientConnectionError):  # incl. _NotRetried's causes: after sending
            return UpstreamClosed, "upstream closed the connection after receiving the request"
        if isinstance(exc, _NotRetried):
            return UpstreamClosed, "upstream closed the connection after receiving the request"
        if isinstance(exc, aio.ClientResponseError):
            return httpx.RemoteProtocolError, f"malformed response from upstream: {exc.message}"
        if isinstance(exc, aio.ClientError):
            return httpx.RemoteProtocolError, str(exc)
        return None
