"""Serve the proxy and Django from one ASGI server: /v1/, /v2/ and /v3/ to the proxy, the rest to Django."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from together_dash.proxy.app import Proxy
from together_dash.proxy.forwarding import is_proxy_path

ASGIApp = Callable[[dict[str, Any], Callable[..., Any], Callable[..., Any]], Awaitable[Any]]


class Dispatcher:
    """Routes by path; lifespan goes to the proxy, which starts and stops with the server."""

    def __init__(self, django_app: ASGIApp, proxy: Proxy) -> None:
        self.django_app = django_app
        self.proxy = proxy

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan" or (scope["type"] == "http" and is_proxy_path(scope["path"])):
            await self.proxy(scope, receive, send)
        else:
            await self.django_app(scope, receive, send)
