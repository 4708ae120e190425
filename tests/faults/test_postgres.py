"""PostgreSQL restarted under proxy traffic: the traffic keeps flowing and no request log is lost or doubled.

Promised (README, "Request logs are written in batches off the request path"): while the database is
down the proxy keeps forwarding with the app keys it already checked, holds up to
PROXY_LOG_BUFFER_SIZE logs and writes them when the database is back; past that bound new logs are
dropped and counted exactly (`together_dash_proxy_logs_dropped_total` on /metrics, `proxy:logs_dropped`
in the cache the dashboard reads). Here with a real uvicorn server, a real database and a real restart.
"""
from __future__ import annotations

import os
import time
from collections import Counter

import pytest
from django.conf import settings
from django.core.cache import cache

from tests.faults._pg import Postgres
from tests.faults._proxy import Traffic, chat, metric, proxy_servers, request_logs, wait_for_logs
from tests.services import require_ci_service
from together_dash.proxy.metrics import DROPPED_CACHE_KEY

DROPPED_METRIC = "together_dash_proxy_logs_dropped_total"
OUTAGE_SECONDS = 4.0


@pytest.fixture
def postgres() -> Postgres:
    postgres = Postgres()
    assert postgres.cluster  # checks up front that this process may stop and start the cluster
    return postgres


@pytest.fixture
def shared_cache() -> str:
    """The CACHE_URL the server must share with this test, so the test reads the dashboard's figure."""
    if "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        require_ci_service("CACHE_URL is not Redis; the dropped-logs figure lives in a shared cache")
    return os.environ["CACHE_URL"]


def test_proxy_traffic_flows_through_a_restart_and_every_log_arrives_once(postgres: Postgres) -> None:
    total = 1200
    with postgres.scratch_database() as name, proxy_servers(
        postgres.url(name), PROXY_LOG_BUFFER_SIZE=str(total * 10), PROXY_KEY_CACHE_SECONDS="1",
    ) as (_, dashboard):
        key = dashboard.create_app_key("faults-pg")
        with Traffic(dashboard.base_url, key, total, clients=4, pause=0.03) as traffic:
            traffic.wait_for(150)
            with postgres.outage():
                down_from = time.monotonic()
                time.sleep(OUTAGE_SECONDS)  # the outage lasts this long while traffic flows
                down_until = time.monotonic()
        rows = wait_for_logs(postgres.url(name), total, timeout=40)
        dropped = metric(dashboard, DROPPED_METRIC)
        # The key path came back too: a key made after the restart works, and so does the old one.
        new_key = dashboard.create_app_key("faults-pg-after")
        after = [chat(dashboard, new_key).status_code, chat(dashboard, key).status_code]

    answers = traffic.answers
    during_outage = [a for a in answers if down_from <= a.at <= down_until]
    assert traffic.errors == []
    assert Counter(a.status for a in answers) == {200: total}
    assert len(during_outage) >= 50, f"{len(during_outage)} answers while PostgreSQL was down"
    sent_ids = [a.request_id for a in answers]
    logged_ids = [row.request_id for row in rows]
    assert len(set(sent_ids)) == total
    assert len(logged_ids) == total and sorted(logged_ids) == sorted(sent_ids)  # none lost, none twice
    assert dropped == 0
    assert after == [200, 200]


def test_past_the_buffer_bound_the_dropped_logs_are_counted_exactly(
    postgres: Postgres, shared_cache: str
) -> None:
    capacity, before, during, after = 40, 25, 100, 15
    with postgres.scratch_database() as name:
        url = postgres.url(name)
        servers = proxy_servers(url, PROXY_LOG_BUFFER_SIZE=str(capacity), CACHE_URL=shared_cache)
        with servers as (_, dashboard):
            key = dashboard.create_app_key("faults-pg-bound")
            first = [chat(dashboard, key) for _ in range(before)]
            assert len(wait_for_logs(url, before)) == before  # the buffer is empty when the database goes
            with postgres.outage():
                # One at a time, so the order the logs reach the buffer is the order they were sent.
                held = [chat(dashboard, key) for _ in range(during)]
                counted_while_down = wait_for_dropped(during - capacity)
            assert len(wait_for_logs(url, before + capacity, timeout=40)) == before + capacity
            last = [chat(dashboard, key) for _ in range(after)]
            wait_for_logs(url, before + capacity + after)
            dropped = metric(dashboard, DROPPED_METRIC)
        # Read once the servers have stopped: a stopped proxy has written out all it ever will, so a
        # log written twice, or a dropped one written anyway, would be in these rows.
        rows = request_logs(url)

    sent = first + held + last
    assert [response.status_code for response in sent] == [200] * len(sent)
    ids = [response.headers["x-request-id"] for response in sent]
    # The database went with the buffer empty: the first `capacity` logs of the outage were held and
    # every later one dropped; once the held ones were written, new logs passed again.
    kept = ids[:before + capacity] + ids[before + during:]
    assert [row.request_id for row in rows] == kept  # exactly these, each once, in order
    assert dropped == during - capacity == 60
    assert counted_while_down == during - capacity
    assert cache.get(DROPPED_CACHE_KEY) == during - capacity
    assert len(rows) + dropped == len(sent)


def wait_for_dropped(expected: int, timeout: float = 10.0) -> int | None:
    """The dropped count in the shared cache once it reaches expected (the flusher publishes it)."""
    deadline = time.monotonic() + timeout
    while (value := cache.get(DROPPED_CACHE_KEY)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value
