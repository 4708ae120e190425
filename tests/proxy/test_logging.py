"""Request logs leave the hot path: buffered, written in batches, held while the database is down."""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import httpx
import pytest
from django.core.cache import cache
from django.db import OperationalError
from prometheus_client import REGISTRY

from tests.waiting import wait_until
from together_dash.keys.models import TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.proxy.app import record_to_database
from together_dash.proxy.buffer import LogBuffer, LogFlusher
from together_dash.proxy.metrics import DROPPED_CACHE_KEY, publish_dropped_to_cache
from together_dash.proxy.testing import running_proxy
from together_dash.simulator.testing import RunningSimulator
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.models import RequestBodySample, RequestLog

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
OTHER_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"
MESSAGES = [{"role": "user", "content": "hello"}]


class FlakyDatabase:
    """The record function seam: fails like a database that is down until told it is back."""

    def __init__(self) -> None:
        self.down = True
        self.attempts = 0

    def __call__(self, entries: Sequence[LogEntry]) -> None:
        self.attempts += 1
        if self.down:
            raise OperationalError("connection refused")
        record_to_database(entries)


@pytest.fixture
def app_key(transactional_db: None) -> str:
    TogetherKey.create(name="main", secret="sim-upstream-key-main")
    return create_app_key("logging-tests")[1]


def chat(base_url: str, key: str, **body: object) -> httpx.Response:
    body = {"model": MODEL, "messages": MESSAGES, **body}
    return httpx.post(f"{base_url}/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {key}"}, timeout=10)


def dropped_metric() -> float:
    return REGISTRY.get_sample_value("together_dash_proxy_logs_dropped_total") or 0.0


def entry(number: int = 0) -> LogEntry:
    return LogEntry(created_at=datetime.now(UTC), endpoint=f"/v1/test/{number}")


# ---- through the proxy --------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_requests_succeed_while_the_database_is_down_and_their_logs_arrive_when_it_returns(
    fresh_simulator: RunningSimulator, app_key: str
) -> None:
    database = FlakyDatabase()
    with running_proxy(fresh_simulator.base_url, record=database, log_flush_interval=0.01) as proxy:
        statuses = [chat(proxy.base_url, app_key).status_code for _ in range(5)]
        assert not proxy.proxy.drain_logs(timeout=0.5)
        assert database.attempts >= 1 and RequestLog.objects.count() == 0

        database.down = False
        assert proxy.proxy.drain_logs(timeout=15)

    assert statuses == [200] * 5
    assert RequestLog.objects.count() == 5
    assert proxy.proxy.logs_dropped == 0


@pytest.mark.django_db(transaction=True)
def test_past_the_bound_new_logs_are_dropped_and_counted_exactly(
    fresh_simulator: RunningSimulator, app_key: str
) -> None:
    cache.delete(DROPPED_CACHE_KEY)
    before = dropped_metric()
    database = FlakyDatabase()
    with running_proxy(fresh_simulator.base_url, record=database, publish_dropped=publish_dropped_to_cache,
                       log_buffer_size=4, log_flush_interval=0.01) as proxy:
        statuses = [chat(proxy.base_url, app_key).status_code for _ in range(10)]
        wait_until(lambda: cache.get(DROPPED_CACHE_KEY) == 6, 10, "the dropped count was not published")
        database.down = False
        assert proxy.proxy.drain_logs(timeout=15)

    assert statuses == [200] * 10
    assert proxy.proxy.logs_dropped == 6
    assert dropped_metric() - before == 6
    assert cache.get(DROPPED_CACHE_KEY) == 6
    assert RequestLog.objects.count() == 4


@pytest.mark.django_db(transaction=True)
def test_shutdown_writes_out_what_is_still_buffered(fresh_simulator: RunningSimulator, app_key: str) -> None:
    with running_proxy(fresh_simulator.base_url, record=record_to_database, log_flush_interval=60.0,
                       log_batch_size=10_000) as proxy:
        for _ in range(3):
            chat(proxy.base_url, app_key)
        assert RequestLog.objects.count() == 0

    assert RequestLog.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_sampled_body_is_kept_redacted_and_capped(fresh_simulator: RunningSimulator, app_key: str) -> None:
    entries: list[LogEntry] = []
    with running_proxy(fresh_simulator.base_url, record=entries.extend, body_sample_rate=1.0,
                       body_sample_max_bytes=200) as proxy:
        chat(proxy.base_url, app_key, user=f"my key is {app_key}, padding " + "x" * 500)
        assert proxy.proxy.drain_logs()

    sample = entries[0].extra["body_sample"]
    assert app_key not in sample["request"] and "[redacted]" in sample["request"]
    assert len(sample["request"]) <= 200
    assert sample["response"].startswith('{"id":')


@pytest.mark.django_db(transaction=True)
def test_a_sampled_body_is_stored_beside_its_request_log(fresh_simulator: RunningSimulator,
                                                         app_key: str) -> None:
    """Through the real recording path: the sampled request gets its bodies, linked to its own row."""
    with running_proxy(fresh_simulator.base_url, record=record_to_database, body_sample_rate=1.0,
                       body_sample_max_bytes=300) as proxy:
        chat(proxy.base_url, app_key, user=f"first call with {app_key}")
        chat(proxy.base_url, app_key, user="second call", model=OTHER_MODEL)
        assert proxy.proxy.drain_logs()

    logs = list(RequestLog.objects.order_by("id"))
    samples = {sample.request_log_id: sample for sample in RequestBodySample.objects.all()}
    assert len(logs) == 2 and set(samples) == {log.id for log in logs}
    first, second = (samples[log.id] for log in logs)
    assert "first call with" in first.request_body and app_key not in first.request_body
    assert "second call" in second.request_body
    assert f'"model":"{MODEL}"' in first.response_body and OTHER_MODEL not in first.response_body
    assert f'"model":"{OTHER_MODEL}"' in second.response_body
    assert first.created_at == logs[0].created_at


@pytest.mark.django_db(transaction=True)
def test_unsampled_requests_in_the_same_batch_keep_no_bodies(fresh_simulator: RunningSimulator,
                                                             app_key: str) -> None:
    with running_proxy(fresh_simulator.base_url, record=record_to_database, body_sample_rate=0.5) as proxy:
        for _ in range(40):
            chat(proxy.base_url, app_key)
        assert proxy.proxy.drain_logs()

    sampled = RequestBodySample.objects.count()
    assert RequestLog.objects.count() == 40
    assert 0 < sampled < 40  # at rate 0.5, all-or-none of 40 has odds of 2 in a trillion
    assert RequestBodySample.objects.filter(request_log__isnull=True).count() == 0


@pytest.mark.django_db(transaction=True)
def test_bodies_are_not_kept_by_default(fresh_simulator: RunningSimulator, app_key: str) -> None:
    entries: list[LogEntry] = []
    with running_proxy(fresh_simulator.base_url, record=entries.extend) as proxy:
        chat(proxy.base_url, app_key)
        assert proxy.proxy.drain_logs()

    assert "body_sample" not in entries[0].extra


# ---- the buffer and the flusher on their own ----------------------------------------------------------

def test_the_buffer_refuses_past_its_bound_counting_the_batch_being_written() -> None:
    buffer = LogBuffer(capacity=3)
    for number in range(3):
        assert buffer.put(entry(number))
    batch = buffer.take(2)

    assert not buffer.put(entry(3))
    assert buffer.dropped == 1
    buffer.done(batch)
    assert buffer.put(entry(4))


def test_a_failed_batch_goes_back_in_front_in_its_order() -> None:
    buffer = LogBuffer(capacity=10)
    for number in range(4):
        buffer.put(entry(number))
    batch = buffer.take(2)
    buffer.put(entry(4))
    buffer.give_back(batch)

    assert [item.endpoint for item in buffer.take(10)] == [f"/v1/test/{n}" for n in (0, 1, 2, 3, 4)]


def test_the_flusher_writes_in_batches_of_at_most_the_batch_size() -> None:
    buffer = LogBuffer(capacity=100)
    batches: list[int] = []
    flusher = LogFlusher(buffer, lambda batch: batches.append(len(batch)), batch_size=4, interval=0.01)
    for number in range(10):
        buffer.put(entry(number))
    flusher.start()

    assert flusher.flush(timeout=5)
    flusher.stop()
    assert batches == [4, 4, 2]


def test_a_batch_that_can_never_be_written_is_dropped_and_counted_not_retried_forever() -> None:
    buffer = LogBuffer(capacity=100)
    calls: list[int] = []

    def broken(batch: Sequence[LogEntry]) -> None:
        calls.append(len(batch))
        raise ValueError("a bug, not an outage")

    flusher = LogFlusher(buffer, broken, batch_size=10, interval=0.01)
    buffer.put(entry())
    buffer.put(entry())
    flusher.start()

    assert flusher.flush(timeout=5)
    flusher.stop()
    assert calls == [2]
    assert buffer.dropped == 2


def test_stop_gives_up_after_its_timeout_and_counts_what_was_left() -> None:
    buffer = LogBuffer(capacity=100)
    published: list[int] = []

    def down(batch: Sequence[LogEntry]) -> None:
        raise OperationalError("still down")

    flusher = LogFlusher(buffer, down, interval=0.01, publish_dropped=published.append)
    for number in range(3):
        buffer.put(entry(number))
    flusher.start()
    started = time.monotonic()
    flusher.stop(timeout=0.3)

    assert time.monotonic() - started < 3
    assert buffer.dropped == 3
    assert sum(published) == 3


def test_putting_never_waits_for_a_write_in_progress() -> None:
    buffer = LogBuffer(capacity=100)
    writing, release = threading.Event(), threading.Event()

    def slow(batch: Sequence[LogEntry]) -> None:
        writing.set()
        release.wait(10)
        writing.clear()

    flusher = LogFlusher(buffer, slow, batch_size=1, interval=0.001)
    flusher.start()
    buffer.put(entry(0))
    assert writing.wait(5)

    accepted = [buffer.put(entry(number)) for number in range(1, 50)]

    assert writing.is_set()  # every put returned while the write was still going on
    release.set()
    flusher.stop()
    assert all(accepted)
