"""The app keys' requests-per-minute limit, shared by every proxy process.

The decision stays local, with no network round trip on the request path: each process counts the
requests it admits in fixed one-minute windows and, every sync period, adds its new ones to a counter
in the shared cache (Redis when CACHE_URL names it) and reads back what all processes admitted. So a
window admits exactly the limit with one process; with many, at most the limit plus what the other
processes admitted since their last sync (a fraction of a second of traffic). A process learns a key's
shared count at the first sync after that key's first request there.

When the shared cache is unreachable each process goes on with what it last knew, and logs it once.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from together_dash.proxy.background import Repeating

logger = logging.getLogger(__name__)

SYNC_SECONDS = 0.25
WINDOW_SECONDS = 60
# A window's shared counter outlives the window by a minute: late syncs still find it.
COUNTER_TIMEOUT = 2 * WINDOW_SECONDS


class SharedCounter(Protocol):
    def add(self, key_id: int, window: int, delta: int) -> int:
        """Add delta to the (key, window) counter of all processes and return its new total."""


class CacheCounter:
    """SharedCounter on Django's cache: atomic INCR on Redis; per process with the local-memory cache."""

    def add(self, key_id: int, window: int, delta: int) -> int:
        from django.core.cache import cache

        name = f"together-dash:app-key-minute:{key_id}:{window}"
        cache.add(name, 0, timeout=COUNTER_TIMEOUT)
        return cache.incr(name, delta)


@dataclass(slots=True)
class _Window:
    window: int
    mine: int = 0  # admitted by this process
    synced: int = 0  # of those, already added to the shared counter
    others: int = 0  # admitted by the other processes, as of the last sync


class MinuteLimiter:
    """Per app key request counts in fixed one-minute windows, shared through a SharedCounter."""

    def __init__(self, shared: SharedCounter | None = None, clock: Callable[[], float] = time.time) -> None:
        self.shared = shared
        self.clock = clock
        self._windows: dict[int, _Window] = {}
        self._lock = threading.Lock()
        self._syncing = Repeating("proxy-rate-limits", self._sync_if_counting)
        self._failing = False

    def check(self, key_id: int, limit: int) -> float | None:
        """Count a request; None when allowed, else the seconds until the window resets."""
        now = self.clock()
        window = int(now // WINDOW_SECONDS)
        with self._lock:
            state = self._windows.get(key_id)
            if state is None or state.window != window:
                state = self._windows[key_id] = _Window(window)
            if state.mine + state.others >= limit:
                return (window + 1) * WINDOW_SECONDS - now
            state.mine += 1
            return None

    def sync(self) -> None:
        """Add this process's new requests to the shared counters and learn the other processes' ones."""
        if self.shared is None:
            return
        window = int(self.clock() // WINDOW_SECONDS)
        with self._lock:
            self._windows = {key: state for key, state in self._windows.items() if state.window == window}
            pending = [(key, state.mine - state.synced) for key, state in self._windows.items()]
        for key_id, delta in pending:
            try:
                total = self.shared.add(key_id, window, delta)
            except Exception as exc:  # noqa: BLE001 - a cache outage must not stop the proxy
                self._note_failure(exc)
                return
            with self._lock:
                state = self._windows.get(key_id)
                if state is not None and state.window == window:
                    state.synced += delta
                    state.others = max(0, total - state.synced)
        self._failing = False

    def _note_failure(self, exc: Exception) -> None:
        if not self._failing:
            logger.warning("App-key rate limits are per process until the shared cache answers again (%s)",
                           type(exc).__name__)
        self._failing = True

    def start(self, every: float = SYNC_SECONDS) -> None:
        """Sync in a background thread every `every` seconds (only while some key is being counted)."""
        if self.shared is not None:
            self._syncing.start(every)

    def stop(self) -> None:
        self._syncing.stop()

    def _sync_if_counting(self) -> None:
        if self._windows:
            self.sync()
