"""Serve the proxy (or any ASGI app) with uvicorn on a free loopback port in a thread, for tests.

    with running_proxy(simulator.base_url, record=record_entries) as running:
        client = OpenAI(base_url=running.base_url, api_key=app_key)   # http://127.0.0.1:PORT/v1
        ...
        running.proxy.drain_logs()   # every request so far is recorded (or False on timeout)

Leaving the block runs the lifespan shutdown: upstream connections close and the log buffer drains.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from together_dash.proxy.app import Proxy, ProxyConfig
from together_dash.proxy.buffer import PublishDropped, RecordFunction


class ServedApp:
    """An ASGI app served by uvicorn (httptools, lifespan on) in a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", lifespan: str = "on") -> None:
        # IPPROTO_TCP spelled out: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP,
        # and without it Nagle's algorithm adds 40 ms to every response written in more than one piece.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.port: int = self._socket.getsockname()[1]
        self.root_url = f"http://{host}:{self.port}"
        config = uvicorn.Config(app, host=host, port=self.port, http="httptools", loop="none",
                                lifespan=lifespan, access_log=False, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"asgi-{self.port}", daemon=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        finally:
            loop.close()

    def start(self, timeout: float = 10.0) -> ServedApp:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the ASGI server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30.0)
        with contextlib.suppress(OSError):
            self._socket.close()


@contextlib.contextmanager
def serve(app: Any, lifespan: str = "on") -> Iterator[ServedApp]:
    """A running server for the duration of the block."""
    served = ServedApp(app, lifespan=lifespan).start()
    try:
        yield served
    finally:
        served.stop()


@dataclass(frozen=True)
class RunningProxy:
    proxy: Proxy
    server: ServedApp

    @property
    def base_url(self) -> str:
        """The OpenAI SDK's (and together 2.x's) base URL."""
        return f"{self.server.root_url}/v1"

    @property
    def root_url(self) -> str:
        """together 3.x's base URL: every resource path carries its own version."""
        return self.server.root_url


@contextlib.contextmanager
def running_proxy(
    upstream_base_url: str,
    *,
    record: RecordFunction | None = None,
    publish_dropped: PublishDropped | None = None,
    **config: Any,
) -> Iterator[RunningProxy]:
    """A proxy in front of upstream_base_url; config fields (ProxyConfig) as keyword arguments."""
    options: dict[str, Any] = {"publish_dropped": publish_dropped}
    if record is not None:
        options["record"] = record
    proxy = Proxy(ProxyConfig(base_url=upstream_base_url.rstrip("/"), **config), **options)
    with serve(proxy) as server:
        yield RunningProxy(proxy, server)
