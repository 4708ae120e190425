"""Stopping and starting the machine's Redis for the fault tests: always started again, and answering."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import redis

START_SECONDS = 20


def redis_answers(host: str, port: int) -> bool:
    try:
        return bool(redis.Redis(host=host, port=port, socket_timeout=1, socket_connect_timeout=1).ping())
    except redis.exceptions.RedisError:
        return False


def restart_redis(host: str, port: int, down_seconds: float) -> None:
    """Shut Redis down without saving (every queue and cache entry is gone), wait, start it again.

    The start is in a finally block and waits for PING, so a failure here never leaves the machine
    without its Redis.
    """
    try:
        shutdown = ["redis-cli", "-h", host, "-p", str(port), "shutdown", "nosave"]
        subprocess.run(shutdown, timeout=10, check=False)
        _wait(lambda: not redis_answers(host, port), f"Redis at {host}:{port} did not shut down")
        time.sleep(down_seconds)  # Redis stays away this long: the outage being simulated
    finally:
        if not redis_answers(host, port):
            subprocess.run(
                ["redis-server", "--daemonize", "yes", "--bind", host, "--port", str(port),
                 "--save", "", "--appendonly", "no"],
                timeout=10, check=True,
            )  # fmt: skip
        _wait(lambda: redis_answers(host, port), f"Redis at {host}:{port} did not start again")


def _wait(condition: Callable[[], bool], failure: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{failure} within {START_SECONDS} s")
        time.sleep(0.1)
