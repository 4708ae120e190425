"""Waiting in tests: on a condition with a deadline, never on a fixed sleep a slow machine can outlast."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL_SECONDS = 0.01


def wait_until(condition: Callable[[], object], timeout: float = 15.0, message: str = "") -> None:
    """Return as soon as condition() is true; fail the test if it is still false after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message or 'the condition did not hold'} within {timeout} s")
        time.sleep(POLL_SECONDS)


async def async_wait_until(condition: Callable[[], object], timeout: float = 15.0, message: str = "") -> None:
    """wait_until for a coroutine: the event loop keeps running (and closing sockets) while it waits."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message or 'the condition did not hold'} within {timeout} s")
        await asyncio.sleep(POLL_SECONDS)
