"""Helpers for poller tests and benchmarks: upstream keys with random secrets, simulated faults per key."""
from __future__ import annotations

import dataclasses
import secrets

import httpx

from together_dash.keys.models import TogetherKey
from together_dash.pollers.fanout import FanOutConfig


def new_secret() -> str:
    """A fresh random secret: no key-shaped string is ever written into the repository."""
    return secrets.token_urlsafe(30)


def add_key(name: str) -> tuple[TogetherKey, str]:
    """An active upstream key and its secret (the simulator accepts any key unless told otherwise)."""
    secret = new_secret()
    return TogetherKey.create(name=name, secret=secret), secret


class SimulatedFault(httpx.AsyncBaseTransport):
    """The real HTTP transport, with every request asking the simulator for a fault (X-Simulate)."""

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["X-Simulate"] = self.fault
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def fault_for_key(key_name: str, fault: str) -> FanOutConfig:
    """The poll configuration from settings, with every call of one key answered by a simulated fault."""
    return dataclasses.replace(
        FanOutConfig.from_settings(),
        transport=lambda key: SimulatedFault(fault) if key.name == key_name else None,
    )
