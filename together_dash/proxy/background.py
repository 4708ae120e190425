"""A function repeated in a daemon thread until stopped: the proxy's syncs that stay off the request path."""
from __future__ import annotations

import threading
from collections.abc import Callable


class Repeating:
    """Calls `step` every `every` seconds (after a first call when `at_once`), in a thread of its own."""

    def __init__(self, name: str, step: Callable[[], None], *, at_once: bool = False,
                 on_exit: Callable[[], None] | None = None) -> None:
        self.name = name
        self.step = step
        self.at_once = at_once
        self.on_exit = on_exit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, every: float) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, args=(every,), name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self, every: float) -> None:
        try:
            if self.at_once:
                self.step()
            while not self._stop.wait(every):
                self.step()
        finally:
            if self.on_exit is not None:
                self.on_exit()
