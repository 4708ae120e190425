"""Request logs off the hot path: a bounded buffer, drained in batches by a background thread.

The proxy only ever appends to the buffer (no I/O, never blocks). A flusher thread hands batches to a
record function (recording.record_entries in production, anything in tests). When the database is
down the batch goes back to the front of the buffer and is retried with backoff; entries that do not
fit under the bound are dropped and counted exactly.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from django.db import InterfaceError, OperationalError

from together_dash.proxy import metrics
from together_dash.traffic.entries import LogEntry

logger = logging.getLogger(__name__)

RecordFunction = Callable[[Sequence[LogEntry]], None]
PublishDropped = Callable[[int], None]

# Connection-level failures mean "the database is away": keep the batch and retry. Anything else
# (a constraint violation, a bug) would fail the same way forever, so that batch is dropped and counted.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, ConnectionError)
MAX_BACKOFF_SECONDS = 10.0


class LogBuffer:
    """A bounded FIFO of log entries; the bound counts the batch being written too."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.dropped = 0
        self._queue: deque[LogEntry] = deque()
        self._in_flight = 0
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)

    def __len__(self) -> int:
        return len(self._queue) + self._in_flight

    def put(self, entry: LogEntry) -> bool:
        """Append an entry, or drop and count it when the buffer is full."""
        with self._lock:
            if len(self._queue) + self._in_flight >= self.capacity:
                self.dropped += 1
                metrics.LOGS_DROPPED.inc()
                return False
            self._queue.append(entry)
            self._publish_size()
            return True

    def take(self, limit: int) -> list[LogEntry]:
        """Move up to limit entries, oldest first, into the in-flight batch."""
        with self._lock:
            count = min(limit, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            self._in_flight += count
            return batch

    def done(self, batch: Sequence[LogEntry]) -> None:
        """The batch was written (or given up on): release its room."""
        with self._lock:
            self._in_flight -= len(batch)
            self._publish_size()
            self.changed.notify_all()

    def give_back(self, batch: Sequence[LogEntry]) -> None:
        """The write failed: put the batch back in front, in its order, to retry it later."""
        with self._lock:
            self._in_flight -= len(batch)
            self._queue.extendleft(reversed(batch))

    def drop(self, batch: Sequence[LogEntry]) -> None:
        """Give up on an in-flight batch and count it as dropped."""
        with self._lock:
            self._in_flight -= len(batch)
            self.dropped += len(batch)
            metrics.LOGS_DROPPED.inc(len(batch))
            self._publish_size()
            self.changed.notify_all()

    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def _publish_size(self) -> None:
        # Set on every change, not read at scrape time (set_function): in multiprocess mode a scrape
        # reads the values each process wrote, never calls into another process.
        metrics.LOG_BUFFER_SIZE.set(len(self._queue) + self._in_flight)


class LogFlusher:
    """The background thread that writes the buffer out in batches."""

    def __init__(
        self,
        buffer: LogBuffer,
        record: RecordFunction,
        *,
        batch_size: int = 500,
        interval: float = 0.2,
        publish_dropped: PublishDropped | None = None,
        on_thread_exit: Callable[[], None] | None = None,
    ) -> None:
        self.buffer = buffer
        self.record = record
        self.batch_size = max(1, batch_size)
        self.interval = interval
        self.publish_dropped = publish_dropped
        self.on_thread_exit = on_thread_exit
        self.failures = 0
        self._published = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._drain_deadline = 0.0
        self._thread = threading.Thread(target=self._run, name="proxy-log-flusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Write everything buffered now; True when the buffer emptied within the timeout (for tests)."""
        deadline = time.monotonic() + timeout
        with self.buffer.changed:
            while len(self.buffer) and time.monotonic() < deadline:
                self._wake.set()
                self.buffer.changed.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            return not len(self.buffer)

    def stop(self, timeout: float = 10.0) -> None:
        """Drain what can be written within the timeout, count the rest as dropped, end the thread."""
        self._drain_deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout + 1.0)

    def _run(self) -> None:
        try:
            while not self._finished():
                self._wake.wait(self._pause())
                self._wake.clear()
                self._write_all()
                self._publish_dropped()
            self._drop_leftovers()
        finally:
            if self.on_thread_exit is not None:
                self.on_thread_exit()

    def _finished(self) -> bool:
        if not self._stopping.is_set():
            return False
        return not len(self.buffer) or time.monotonic() >= self._drain_deadline

    def _pause(self) -> float:
        pause = min(0.5 * 2 ** (self.failures - 1), MAX_BACKOFF_SECONDS) if self.failures else self.interval
        if self._stopping.is_set():
            return max(0.0, min(pause, self._drain_deadline - time.monotonic()))
        return pause

    def _write_all(self) -> None:
        """Write batches until the buffer is empty or a write fails."""
        while True:
            batch = self.buffer.take(self.batch_size)
            if not batch:
                return
            if not self._write(batch):
                return

    def _write(self, batch: list[LogEntry]) -> bool:
        try:
            self.record(batch)
        except RETRYABLE_ERRORS as exc:
            self.buffer.give_back(batch)
            self._note_failure(exc)
            return False
        except Exception:
            self.buffer.drop(batch)
            logger.exception("Dropped %d request logs that could not be written", len(batch))
            return True
        self.buffer.done(batch)
        self._note_recovery()
        return True

    def _note_failure(self, exc: BaseException) -> None:
        self.failures += 1
        if self.failures == 1:
            logger.warning(
                "Request logs cannot be written (%s); holding up to %d in memory and retrying",
                type(exc).__name__, self.buffer.capacity,
            )

    def _note_recovery(self) -> None:
        if self.failures:
            logger.warning("Request logs are being written again after %d failed attempts", self.failures)
        self.failures = 0

    def _publish_dropped(self) -> None:
        delta = self.buffer.dropped - self._published
        if not delta or self.publish_dropped is None:
            return
        try:
            self.publish_dropped(delta)
        except Exception:  # the count stays pending and goes out with the next successful publish
            logger.warning("Could not publish the count of dropped request logs", exc_info=True)
            return
        self._published += delta

    def _drop_leftovers(self) -> None:
        leftovers = self.buffer.take(len(self.buffer) + 1)
        if leftovers:
            logger.warning("Dropped %d request logs not written before shutdown", len(leftovers))
        self.buffer.drop(leftovers)
        self._publish_dropped()
