"""The fault-injection suite (`make test-faults`): every test here is marked `faults`.

These tests stop and start real services (PostgreSQL, Redis, SMTP, Celery workers), so `make test`
leaves them out and `make test-faults` runs them alone, against PostgreSQL and Redis. Each test holds
an exclusive lock on the machine for its whole run, so two fault runs never restart a service under
each other.
"""
from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

LOCK = Path(tempfile.gettempdir()) / "together-dash-faults.lock"
HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before -m selects on it
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.faults)


@pytest.fixture(autouse=True)
def _one_fault_run_at_a_time() -> Iterator[None]:
    with open(LOCK, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture
def fresh_connections(_one_fault_run_at_a_time: None) -> None:
    """Drop database connections opened before the lock: another fault run may have restarted PostgreSQL.

    Only for transactional tests (django_db(transaction=True)): no transaction is open at this point.
    """
    from django.db import connections

    connections.close_all()
