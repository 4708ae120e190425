"""One poll end to end through a real `celery worker` process, on whatever broker the settings name.

The worker is another process, so it needs a database it can open: PostgreSQL's test database as is,
or, on SQLite (whose test database lives in this process's memory), a file the test copies the
in-memory database to before the worker starts and copies back to read what the worker wrote.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from together_dash.catalog import tasks as catalog_tasks
from together_dash.catalog.models import ModelInfo
from together_dash.pollers.models import PollerHeartbeat
from together_dash.pollers.testing import add_key
from together_dash.simulator import catalog
from together_dash.simulator.testing import RunningSimulator

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]

WAIT_SECONDS = 60


class WorkerDatabase:
    """The test database as a URL the worker can use, and a way to see the worker's writes."""

    def __init__(self, tmp_path: Path) -> None:
        self.file: Path | None = None
        if connection.vendor == "sqlite":
            self.file = tmp_path / "worker.sqlite3"
            self.url = f"sqlite:///{self.file}"
        else:
            self.url = _postgres_url(connection.settings_dict)

    def hand_over(self) -> None:
        """Make what the test wrote visible to the worker."""
        if self.file is not None:
            connection.ensure_connection()
            with closing(sqlite3.connect(self.file)) as target:
                connection.connection.backup(target)

    def refresh(self) -> None:
        """Make what the worker wrote visible to the test's queries."""
        if self.file is not None:
            with closing(sqlite3.connect(self.file)) as source:
                source.backup(connection.connection)


def _postgres_url(db: dict[str, object]) -> str:
    user = quote(str(db.get("USER") or ""))
    password = quote(str(db.get("PASSWORD") or ""))
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{credentials}{db.get('HOST') or '127.0.0.1'}{port}/{db['NAME']}"


class CeleryWorker:
    """`celery worker` in a subprocess, consuming a queue of its own so no other worker takes the task."""

    def __init__(self, database: WorkerDatabase, base_url: str, log: Path) -> None:
        self.database = database
        self.queue = f"test-pollers-{uuid.uuid4().hex[:12]}"
        self.log = log
        self.env = {
            **os.environ,
            "DATABASE_URL": database.url,
            "TOGETHER_BASE_URL": base_url,
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            # The var dir this process really uses: the filesystem broker's folders and the encryption
            # key of the stored secrets live there.
            "TOGETHER_DASH_VAR_DIR": str(settings.VAR_DIR),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> CeleryWorker:
        self.database.hand_over()
        command = [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "together_dash",
            "worker",
            "-Q",
            self.queue,
            "--pool",
            "solo",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "INFO",
        ]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=settings.BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        # The worker binds its queue when it starts consuming; a task sent before that has no route.
        self._wait(lambda: "ready." in self.log.read_text(), "the worker did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def wait_for(self, condition: Callable[[], bool]) -> None:
        """Poll the database until condition() holds."""

        def met() -> bool:
            self.database.refresh()
            return condition()

        self._wait(met, "the worker did not finish the task")

    def wait_for_success(self, task_id: str) -> None:
        """Wait until the worker logs that the task returned: nothing it does after that is still to come."""
        succeeded = f"[{task_id}] succeeded"
        self._wait(lambda: succeeded in self.log.read_text(), f"task {task_id} did not succeed")

    def _wait(self, condition: Callable[[], bool], failure: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            if condition():
                return
            assert self.process is not None and self.process.poll() is None, self._log_tail(
                "the worker exited"
            )
            time.sleep(0.25)
        pytest.fail(self._log_tail(f"{failure} within {WAIT_SECONDS} s"))

    def _log_tail(self, what: str) -> str:
        return f"{what}; its log ends:\n{self.log.read_text()[-3000:]}"


def test_a_poll_runs_end_to_end_through_a_real_celery_worker(
    together: RunningSimulator, tmp_path: Path
) -> None:
    add_key("main")
    with CeleryWorker(WorkerDatabase(tmp_path), together.base_url, tmp_path / "worker.log") as worker:
        catalog_tasks.poll_models.apply_async(queue=worker.queue)
        worker.wait_for(_catalog_polled)
    heartbeat = PollerHeartbeat.objects.get(name="poll_models")
    assert heartbeat.last_report["ok"] == 1
    assert (heartbeat.run_token, heartbeat.running_since) == ("", None)


def _catalog_polled() -> bool:
    polled = PollerHeartbeat.objects.filter(name="poll_models", last_success__isnull=False).exists()
    return polled and ModelInfo.objects.count() == len(catalog.MODELS)
