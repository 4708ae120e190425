"""The app-key rate limit: exact in one process, shared by many through the cache within one sync."""
from __future__ import annotations

import pytest
from django.core.cache import cache

from tests.waiting import wait_until
from together_dash.proxy.limits import CacheCounter, MinuteLimiter

KEY = 7
START = 6_000.0  # the start of a minute window


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeShared:
    """The shared counter of several processes, in a dict; can be made to fail like a Redis outage."""

    def __init__(self) -> None:
        self.totals: dict[tuple[int, int], int] = {}
        self.down = False

    def add(self, key_id: int, window: int, delta: int) -> int:
        if self.down:
            raise ConnectionError("cache unavailable")
        self.totals[key_id, window] = self.totals.get((key_id, window), 0) + delta
        return self.totals[key_id, window]


def admitted(limiter: MinuteLimiter, count: int, limit: int) -> int:
    return sum(limiter.check(KEY, limit) is None for _ in range(count))


def test_one_process_admits_exactly_the_limit_then_says_when_the_window_resets() -> None:
    clock = Clock(START + 15)
    limiter = MinuteLimiter(clock=clock)

    assert admitted(limiter, 12, limit=10) == 10
    assert limiter.check(KEY, 10) == pytest.approx(45)
    clock.now = START + 60
    assert limiter.check(KEY, 10) is None  # a new window


def test_processes_share_the_limit_after_a_sync() -> None:
    shared, clock = FakeShared(), Clock()
    first, second = MinuteLimiter(shared, clock), MinuteLimiter(shared, clock)

    assert admitted(first, 6, limit=10) == 6
    first.sync()
    assert admitted(second, 1, limit=10) == 1  # its first request for the key: it knows no count yet
    second.sync()

    assert admitted(second, 10, limit=10) == 3
    second.sync()
    first.sync()
    assert admitted(first, 5, limit=10) == 0
    assert shared.totals[KEY, int(START // 60)] == 10


def test_between_syncs_the_overshoot_is_what_the_others_admitted_meanwhile() -> None:
    shared, clock = FakeShared(), Clock()
    processes = [MinuteLimiter(shared, clock) for _ in range(3)]

    per_process = [admitted(limiter, 10, limit=10) for limiter in processes]  # no sync yet
    for limiter in processes:
        limiter.sync()
    for limiter in processes:
        limiter.sync()

    assert per_process == [10, 10, 10]
    assert all(admitted(limiter, 1, limit=10) == 0 for limiter in processes)


def test_a_sync_counts_each_request_once_however_often_it_runs() -> None:
    shared, clock = FakeShared(), Clock()
    limiter = MinuteLimiter(shared, clock)
    admitted(limiter, 4, limit=100)
    for _ in range(5):
        limiter.sync()
    admitted(limiter, 3, limit=100)
    limiter.sync()

    assert shared.totals[KEY, int(START // 60)] == 7


def test_a_cache_outage_leaves_each_process_on_what_it_knew(caplog: pytest.LogCaptureFixture) -> None:
    shared, clock = FakeShared(), Clock()
    first, second = MinuteLimiter(shared, clock), MinuteLimiter(shared, clock)
    admitted(first, 5, limit=10)
    first.sync()
    admitted(second, 1, limit=10)
    second.sync()
    shared.down = True

    admitted(first, 2, limit=10)
    first.sync()
    first.sync()

    assert admitted(second, 10, limit=10) == 4  # still counts the 5 of the other process it knew of
    assert caplog.text.count("per process until the shared cache answers") == 1
    shared.down = False
    first.sync()
    assert shared.totals[KEY, int(START // 60)] == 8  # the outage's requests arrive afterwards


def test_the_cache_counter_adds_across_limiters(db: None) -> None:
    cache.clear()
    clock = Clock()
    first, second = MinuteLimiter(CacheCounter(), clock), MinuteLimiter(CacheCounter(), clock)

    admitted(first, 3, limit=5)
    first.sync()
    admitted(second, 1, limit=5)
    second.sync()

    assert admitted(second, 5, limit=5) == 1


def test_the_background_sync_runs_and_stops() -> None:
    shared = FakeShared()
    limiter = MinuteLimiter(shared)
    limiter.start(every=0.01)
    try:
        admitted(limiter, 3, limit=10)
        wait_until(lambda: sum(shared.totals.values()) == 3, message="the background sync did not run")
    finally:
        limiter.stop()
    assert sum(shared.totals.values()) == 3
