"""The test suite's clock: time-machine moves the calendar, never time.monotonic.

time-machine 2.13 to 2.x patched time.monotonic to its travelled wall time and did not restore it when
the travel ended, so after any test that travelled, time.monotonic returned wall-clock seconds for the
rest of the process. psycopg computes its connect deadline and checks it against different clocks then,
and every connect with a connect_timeout failed at once with "connection timeout expired": the fault
suite's "PostgreSQL connect stall after a restart", seen only in a process where test_smtp.py (which
travels) had run before the PostgreSQL tests. This pins the behaviour the suite relies on.
"""
from __future__ import annotations

import time
from datetime import UTC, datetime

import time_machine


def test_a_travel_leaves_the_monotonic_clock_alone_during_and_after_it() -> None:
    before = time.monotonic()
    with time_machine.travel(datetime(2030, 1, 1, tzinfo=UTC), tick=False) as traveller:
        during = time.monotonic()
        traveller.shift(3600)
        shifted = time.monotonic()
        assert datetime.now(UTC).year == 2030
    after = time.monotonic()
    assert before <= during <= shifted <= after < before + 60
