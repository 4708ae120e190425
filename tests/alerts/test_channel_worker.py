"""End to end: a 402 through the real proxy reaches a webhook receiver, signed, within 10 s, once.

The proxy (in front of the simulator) records the 402 and fires the billing alert; the outbox row goes
to a real Celery worker over the configured broker, and the worker POSTs it to an HTTP receiver on
loopback. The worker runs in a thread of this process (celery.contrib.testing) so that it shares the test
database on SQLite too, where the test database lives in this process's memory. While the worker runs,
the test waits on the receiver and reads no row: SQLite's shared in-memory database refuses a writer
("table is locked") instead of making it wait for a reader, which would fail the worker's task. The rows
are read once the worker has stopped (it finishes its task first).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
import pytest
from celery.contrib.testing.worker import start_worker

from tests.alerts.receivers import Answer, Receiver
from tests.alerts.test_channels import WEBHOOK_SECRET, verify
from tests.waiting import wait_until
from together_dash.alerts.evaluation import fire_billing
from together_dash.alerts.models import AlertChannel, Notification
from together_dash.alerts.services import add_channel
from together_dash.alerts.tasks import deliver_notification
from together_dash.celery import app as celery_app
from together_dash.keys.models import TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.proxy.app import record_to_database
from together_dash.proxy.testing import running_proxy
from together_dash.simulator.testing import RunningSimulator

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
TARGET_SECONDS = 10.0


@contextmanager
def celery_worker() -> Iterator[None]:
    """A real worker consuming the default queue (emptied first: earlier tests leave tasks on it)."""
    hijack = celery_app.conf.worker_hijack_root_logger
    celery_app.conf.worker_hijack_root_logger = False  # keep pytest's and Django's log handlers
    celery_app.control.purge()
    try:
        with start_worker(celery_app, perform_ping_check=False, shutdown_timeout=30):
            yield
    finally:
        celery_app.conf.worker_hijack_root_logger = hijack


def chat(base_url: str, key: str, simulate: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "X-Simulate": simulate}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
    return httpx.post(f"{base_url}/chat/completions", json=body, headers=headers, timeout=10)


def test_a_402_through_the_proxy_reaches_the_webhook_signed_within_10_s_once(
    fresh_simulator: RunningSimulator, receiver: Receiver, rules: None
) -> None:
    TogetherKey.create(name="main", secret="sim-upstream-key-main")
    app_key = create_app_key("channel-e2e")[1]
    add_channel("webhook", receiver.url, secret=WEBHOOK_SECRET)

    with running_proxy(fresh_simulator.base_url, record=record_to_database, log_flush_interval=0.01) as proxy:
        with celery_worker():
            started = time.monotonic()
            assert chat(proxy.base_url, app_key, "402").status_code == 402
            wait_until(lambda: receiver.requests, TARGET_SECONDS, "the webhook message did not arrive")
            arrived = time.monotonic() - started

        # More 402s on the same key: the alert is firing already, so no second message is written.
        assert {chat(proxy.base_url, app_key, "402").status_code for _ in range(20)} == {402}
        assert proxy.proxy.drain_logs()

    assert arrived <= TARGET_SECONDS
    (request,) = receiver.requests
    assert verify(WEBHOOK_SECRET, request.headers, request.body)
    assert request.json["summary"] == "Credits exhausted on key main (HTTP 402)"
    (row,) = AlertChannel.objects.get().notifications.all()
    assert (row.status, row.attempts) == (Notification.Status.SENT, 1)


def test_the_task_waits_out_a_429s_retry_after_and_delivers_once(receiver: Receiver, rules: None) -> None:
    key = TogetherKey.create(name="main", secret="sim-upstream-key-main")
    channel = add_channel("webhook", receiver.url, secret=WEBHOOK_SECRET)[0]
    receiver.answer_next(Answer(429, b"slow down", (("Retry-After", "1"),)))
    fire_billing(key.pk, datetime.now(UTC), "traffic")
    row = Notification.objects.get(channel=channel)

    # Sent while the worker runs, and its retry published by the worker as it consumes: the race in
    # kombu's filesystem transport that core/broker.py closes (tests/core/test_broker.py).
    with celery_worker():
        deliver_notification.delay(row.pk)
        wait_until(lambda: len(receiver.requests) == 2, message="the retry did not arrive")

    row.refresh_from_db()
    assert row.status == Notification.Status.SENT
    assert [r.headers["x-together-dash-delivery"] for r in receiver.requests] == [str(row.pk)] * 2
    assert (row.attempts, row.last_error) == (2, "")
    first, second = (r.headers["x-together-dash-timestamp"] for r in receiver.requests)
    assert int(second) - int(first) >= 1
