"""The simulator's notion of time: wall-clock by default, freezable and advanceable for tests."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class SimClock:
    """Unix time in seconds that tests can freeze and move forward without sleeping.

    Everything time-based in the simulator (fine-tune and batch progress, rate-limit windows, scenario
    deadlines) reads `now()`, so advancing this clock moves all of it deterministically.
    """

    def __init__(self) -> None:
        self._offset = 0.0
        self._frozen_at: float | None = None

    def now(self) -> float:
        if self._frozen_at is not None:
            return self._frozen_at + self._offset
        return time.time() + self._offset

    def freeze(self, at: float | None = None) -> None:
        """Stop the clock (at `at`, or now) so that only `advance` moves it."""
        self._frozen_at = self.now() if at is None else at
        self._offset = 0.0

    def unfreeze(self) -> None:
        """Follow wall-clock time again, keeping any offset accumulated so far."""
        if self._frozen_at is not None:
            self._offset = self._frozen_at + self._offset - time.time()
            self._frozen_at = None

    def advance(self, seconds: float) -> None:
        self._offset += seconds

    def reset(self) -> None:
        self._offset = 0.0
        self._frozen_at = None

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None


def iso(ts: float) -> str:
    """ISO-8601 UTC with milliseconds and a Z, the shape Together uses (e.g. 2023-05-17T17:35:45.123Z)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
