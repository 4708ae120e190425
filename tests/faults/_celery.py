"""Real `celery worker` and `celery beat` processes for the fault tests, each in a process group of its own.

A fault test kills or restarts what these start, so every process runs in its own session: SIGKILL to
the group takes the worker's main process and its pool children down at once, as a lost machine would.
The processes share the test's PostgreSQL database and the Redis broker named by the settings.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connection

from tests.pollers.test_celery_worker import WorkerDatabase

WAIT_SECONDS = 60
# A worker that dies holding a task gives it back after this many seconds (settings.py explains the
# production value); short here so the test sees the hand-over within seconds. Longer than any task the
# tests run after the fault, or the redelivery would itself be redelivered.
TEST_VISIBILITY_TIMEOUT = 6


def redis_broker() -> tuple[str, int]:
    """Host and port of the Redis broker; these tests are about Redis, so any other broker is a failure."""
    url = urlsplit(settings.CELERY_BROKER_URL)
    if url.scheme not in ("redis", "rediss"):
        pytest.fail(f"the fault suite needs a Redis CELERY_BROKER_URL, not {settings.CELERY_BROKER_URL!r}")
    return url.hostname or "127.0.0.1", url.port or 6379


def shared_database_url(tmp_path: Path) -> str:
    """The test database as a URL other processes can open: PostgreSQL only (SQLite's lives in memory)."""
    if connection.vendor != "postgresql":
        pytest.fail("the fault suite needs DATABASE_URL=postgres://... (workers share the test database)")
    return WorkerDatabase(tmp_path).url


def new_queue(prefix: str) -> str:
    """A queue of the test's own, so no other worker on the broker takes its tasks."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class CeleryProcess:
    """One `celery` command in a subprocess of its own session, its output in a log file."""

    ready_line = ""

    def __init__(self, name: str, arguments: list[str], tmp_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.arguments = arguments
        self.log = tmp_path / f"{name}.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": shared_database_url(tmp_path),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "CELERY_BROKER_VISIBILITY_TIMEOUT": str(TEST_VISIBILITY_TIMEOUT),
            # The var dir this process uses: the encryption key of the stored Together secrets is there.
            "TOGETHER_DASH_VAR_DIR": str(settings.VAR_DIR),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CeleryProcess:
        command = [str(Path(sys.executable).with_name("celery")), "-A", "together_dash", *self.arguments]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=settings.BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if self.ready_line:
            self.wait(lambda: self.ready_line in self.output(), f"{self.name} did not start")
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown handler runs, no task is acknowledged or requeued."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (warm shutdown), then SIGKILL if it does not end within 10 s; nothing if already dead."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass

    def wait(self, condition: Callable[[], bool], failure: str, seconds: float = WAIT_SECONDS) -> None:
        """Poll condition() until it holds; fail with the end of this process's log."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return
            assert self.process is not None and self.process.poll() is None, self.log_tail(
                f"{self.name} exited"
            )
            time.sleep(0.2)
        pytest.fail(self.log_tail(f"{failure} within {seconds:.0f} s"))

    def log_tail(self, what: str) -> str:
        return f"{what}; the log of {self.name} ends:\n{self.output()[-3000:]}"

    def __enter__(self) -> CeleryProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Worker(CeleryProcess):
    """`celery worker` (prefork, one child) on one queue."""

    ready_line = "ready."

    def __init__(self, name: str, queue: str, tmp_path: Path, env: dict[str, str] | None = None) -> None:
        arguments = [
            "worker", "-Q", queue, "-n", f"{name}@%h", "--pool", "prefork", "--concurrency", "1",
            "--without-mingle", "--without-gossip", "--loglevel", "INFO",
        ]  # fmt: skip
        super().__init__(name, arguments, tmp_path, env or {})

    def kill_pool_process(self) -> None:
        """SIGKILL the pool process running the task, not the worker: its main process sees the loss."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        assert len(children) == 1, f"expected one pool process, found {children}"
        os.kill(int(children[0]), signal.SIGKILL)

    def task_ids(self, state: str) -> list[str]:
        """Ids of the tasks this worker logged as received or succeeded, in order, repeats kept."""
        return re.findall(rf"Task [\w.]+\[([0-9a-f-]+)\] {state}", self.output())


class Beat(CeleryProcess):
    """`celery beat` with the database scheduler, looking at its schedule every second."""

    ready_line = "beat: Starting..."

    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None) -> None:
        arguments = [
            "beat", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler", "--max-interval", "1",
            "--pidfile", str(tmp_path / "beat.pid"), "--loglevel", "INFO",
        ]  # fmt: skip
        super().__init__("beat", arguments, tmp_path, env or {})

    def sent(self, name: str) -> list[datetime]:
        """When beat sent the periodic task `name`: one line per due time it handled, failed sends too."""
        stamps = re.findall(rf"^\[([\d-]+ [\d:,]+): INFO/MainProcess\] Scheduler: Sending due task {name} ",
                            self.output(), flags=re.MULTILINE)
        return [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f") for stamp in stamps]

    def failed(self, name: str) -> int:
        """How many sends of `name` failed (the broker was away): those due runs are skipped, not retried."""
        return self.output().count(f"Message Error: Couldn't apply scheduled task {name}:")


def purge(queue: str) -> None:
    """Empty a queue on the broker, so no message of one test is left for a worker of another."""
    from together_dash.celery import app

    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(queue)
