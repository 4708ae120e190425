"""The proxy: a pure ASGI app that forwards /v1/* to Together and logs every request off the hot path.

One shared httpx transport carries all upstream traffic (upstream.py: httpx's Request, Response and
exceptions over a lean keep-alive pool; PROXY_UPSTREAM_TRANSPORT picks another, see transport.py);
responses are relayed chunk by chunk as they arrive (raw, so compressed bodies pass unchanged) and
watched on the side for model, usage, request id, rate-limit headers and, on errors, the
classification. A client that hangs up cancels the upstream
request. Each request becomes one LogEntry in a bounded buffer that a background thread writes out.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

from together_dash.proxy import metrics
from together_dash.proxy.auth import CredentialCache
from together_dash.proxy.budgets import BudgetGuard
from together_dash.proxy.buffer import LogBuffer, LogFlusher, PublishDropped, RecordFunction
from together_dash.proxy.exchange import Collaborators, Exchange
from together_dash.proxy.forwarding import upstream_root, upstream_url
from together_dash.proxy.limits import CacheCounter, MinuteLimiter
from together_dash.proxy.transport import proxy_transport
from together_dash.traffic.entries import LogEntry

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

SHUTDOWN_DRAIN_SECONDS = 10.0
MAX_CACHED_URLS = 1024


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Everything the proxy reads from settings, in one place (tests build their own)."""

    base_url: str
    timeout: float = 60.0
    connect_timeout: float = 5.0
    passthrough: bool = False
    key_cache_seconds: float = 2.0
    log_buffer_size: int = 10_000
    log_batch_size: int = 500
    log_flush_interval: float = 0.2
    body_sample_rate: float = 0.0
    body_sample_max_bytes: int = 4096
    max_body_bytes: int = 100 * 1024 * 1024
    # Sized for 64+ concurrent clients with room for slow streams; idle connections are kept for
    # keepalive_expiry seconds (ours keeps at most 128 idle, aiohttp up to max_connections).
    max_connections: int = 512
    keepalive_expiry: float = 5.0
    upstream_transport: str = "lean"
    # Enforced app-key budgets: how often the proxy reads the shared spend counters. 0: never in the
    # background (tests call proxy.budgets.sync() themselves); servers read PROXY_BUDGET_SYNC_SECONDS.
    budget_sync_seconds: float = 0.0
    # In a server process, everything loaded at startup (Django, the apps) lives as long as the process:
    # gc.freeze() keeps the collector from walking it again and again, which showed as p99 spikes.
    freeze_gc_at_start: bool = False
    # OpenTelemetry export on (OTEL_EXPORTER_OTLP_ENDPOINT): keep each caller's traceparent for its span.
    trace_context: bool = False
    capture_content: bool = False  # OTEL_CAPTURE_CONTENT: bodies into the span, redacted and capped

    @classmethod
    def from_settings(cls) -> ProxyConfig:
        return cls(
            base_url=settings.TOGETHER_BASE_URL.rstrip("/"),
            timeout=settings.TOGETHER_TIMEOUT,
            connect_timeout=settings.TOGETHER_CONNECT_TIMEOUT,
            passthrough=settings.PROXY_PASSTHROUGH,
            key_cache_seconds=settings.PROXY_KEY_CACHE_SECONDS,
            log_buffer_size=settings.PROXY_LOG_BUFFER_SIZE,
            log_batch_size=settings.PROXY_LOG_BATCH_SIZE,
            log_flush_interval=settings.PROXY_LOG_FLUSH_INTERVAL,
            body_sample_rate=settings.PROXY_BODY_SAMPLE_RATE,
            body_sample_max_bytes=settings.PROXY_BODY_SAMPLE_MAX_BYTES,
            max_body_bytes=settings.PROXY_MAX_BODY_BYTES,
            upstream_transport=settings.PROXY_UPSTREAM_TRANSPORT,
            budget_sync_seconds=settings.PROXY_BUDGET_SYNC_SECONDS,
            freeze_gc_at_start=True,
            trace_context=bool(settings.OTEL_EXPORTER_OTLP_ENDPOINT),
            capture_content=bool(settings.OTEL_EXPORTER_OTLP_ENDPOINT) and settings.OTEL_CAPTURE_CONTENT,
        )


def record_to_database(entries: Sequence[LogEntry]) -> None:
    """The production record function: RequestLog rows via recording.record_entries.

    The flusher thread keeps its database connection from batch to batch (a reconnect per batch would
    cost more than many batches); after any failure it starts the next batch on a fresh one.
    """
    from django.db import connection, reset_queries

    # Imported late: the flusher must start even if recording has a problem; the error shows per batch.
    from together_dash.traffic.recording import record_entries

    try:
        record_entries(entries)
    except Exception:
        connection.close()
        raise
    finally:
        # With DEBUG on, Django keeps every query of a thread until a request ends, and this thread
        # serves none: without this its query log grows to 9,000 bulk INSERTs.
        reset_queries()


def close_database_connections() -> None:
    from django.db import connections

    connections.close_all()


class Proxy:
    """The ASGI app for /v1/*; start() and stop() bracket its upstream pool, key cache and log flusher."""

    def __init__(
        self,
        config: ProxyConfig | None = None,
        *,
        record: RecordFunction = record_to_database,
        publish_dropped: PublishDropped | None = metrics.publish_dropped_to_cache,
        transport: httpx.AsyncBaseTransport | None = None,
        after_stop: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        # Run in a thread once the last logs are written (asgi.py: send the OpenTelemetry spans still queued;
        # uvicorn ends a stopped worker with the signal it got, so no atexit handler runs there).
        self._after_stop = after_stop
        self._record = record
        self._publish_dropped = publish_dropped
        self._transport = transport
        self._start_lock: asyncio.Lock | None = None
        self.started = False
        self.in_flight = 0
        self.sample = random.random
        self._urls: dict[str, httpx.URL] = {}

    async def start(self) -> None:
        """Open the upstream pool, the key cache and the log flusher (idempotent)."""
        if self.started:
            return
        self.config = self._config or ProxyConfig.from_settings()
        self.upstream_root = upstream_root(self.config.base_url)
        self.transport = self._transport or proxy_transport(
            self.config.upstream_transport,
            self.config.base_url,
            max_connections=self.config.max_connections,
            keepalive_expiry=self.config.keepalive_expiry,
        )
        self.timeouts = httpx.Timeout(self.config.timeout, connect=self.config.connect_timeout).as_dict()
        self._start_logging()
        # One thread for key lookups: few (one per key per cache period), and its database
        # connection can be closed on stop, which a shared default executor would not allow.
        self._key_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="proxy-keys")
        self.credentials = CredentialCache(
            self._key_thread, ttl=self.config.key_cache_seconds, passthrough=self.config.passthrough
        )
        self.limiter = MinuteLimiter(CacheCounter())
        self.limiter.start()
        self.budgets = BudgetGuard()
        if self.config.budget_sync_seconds > 0:
            self.budgets.start(self.config.budget_sync_seconds)
        self.shared = Collaborators(
            credentials=self.credentials,
            limiter=self.limiter,
            upstream_url=self.upstream_url,
            transport=self.transport,
            timeouts=self.timeouts,
            logs=self.logs,
            body_sample_rate=self.config.body_sample_rate,
            body_sample_max_bytes=self.config.body_sample_max_bytes,
            max_body_bytes=self.config.max_body_bytes,
            sample=self.sample,
            budgets=self.budgets,
            trace_context=self.config.trace_context,
            capture_content=self.config.capture_content,
        )
        self.started = True
        if self.config.freeze_gc_at_start:
            gc.freeze()

    def _start_logging(self) -> None:
        self.logs = LogBuffer(self.config.log_buffer_size)
        self.flusher = LogFlusher(
            self.logs,
            self._record,
            batch_size=self.config.log_batch_size,
            interval=self.config.log_flush_interval,
            publish_dropped=self._publish_dropped,
            on_thread_exit=close_database_connections,
        )
        self.flusher.start()

    async def stop(self) -> None:
        """Close upstream connections, write out the buffered logs, release database connections."""
        if not self.started:
            return
        self.started = False
        await self.transport.aclose()
        await asyncio.to_thread(self.flusher.stop, SHUTDOWN_DRAIN_SECONDS)
        if self._after_stop is not None:
            await asyncio.to_thread(self._after_stop)
        await asyncio.to_thread(self.limiter.stop)
        await asyncio.to_thread(self.budgets.stop)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._key_thread, close_database_connections)
        self._key_thread.shutdown(wait=True)

    def upstream_url(self, scope: Scope) -> httpx.URL:
        """The upstream URL of a request; parsed URLs are kept, since most requests share a few paths."""
        raw = upstream_url(self.upstream_root, scope)
        url = self._urls.get(raw)
        if url is None:
            if len(self._urls) >= MAX_CACHED_URLS:
                self._urls.clear()
            url = self._urls[raw] = httpx.URL(raw)
        return url

    def drain_logs(self, timeout: float = 5.0) -> bool:
        """Wait for requests in flight to end and their logs to be written: True, or False on timeout.

        Callable from any thread (tests, shutdown hooks); a request's log is buffered only after its
        response went out, so waiting on the buffer alone could miss the request just answered.
        """
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self.in_flight and self.flusher.flush(max(0.0, deadline - time.monotonic()))

    @property
    def logs_dropped(self) -> int:
        return self.logs.dropped

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if not self.started:
            await self._start_lazily()
        self.in_flight += 1
        try:
            await Exchange(self.shared, scope, receive, send).run()
        finally:
            self.in_flight -= 1

    async def lifespan(self, receive: Receive, send: Send) -> None:
        """The ASGI lifespan protocol: start on startup, drain and stop on shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._lifespan_step(self.start, "startup", send)
            elif message["type"] == "lifespan.shutdown":
                await self._lifespan_step(self.stop, "shutdown", send)
                return

    async def _lifespan_step(self, action: Callable[[], Awaitable[None]], name: str, send: Send) -> None:
        try:
            await action()
        except Exception as exc:
            logger.exception("Proxy %s failed", name)
            message = f"proxy {name} failed: {type(exc).__name__}"
            await send({"type": f"lifespan.{name}.failed", "message": message})
            return
        await send({"type": f"lifespan.{name}.complete"})

    async def _start_lazily(self) -> None:
        # Servers run without lifespan (e.g. --lifespan off) still get a working proxy.
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            await self.start()
