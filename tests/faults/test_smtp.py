"""SMTP down for minutes, or hung: the alert email goes out once when it is back, and nothing waits on it.

The SMTP server is real (aiosmtpd on loopback), and so is its absence: a port where nothing listens
refuses every connection, and a port that accepts and never speaks stands for a hung server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import time_machine
from django.utils import timezone

from tests.alerts.conftest import BILLING_OWNER, SmtpServer
from tests.faults._celery import Worker, purge, redis_broker
from tests.faults._smtp import SilentServer
from together_dash.alerts.delivery import REDELIVERY_TASK, DeliveryError, deliver
from together_dash.alerts.evaluation import fire_billing
from together_dash.alerts.models import AlertRule, Notification
from together_dash.alerts.tasks import redeliver_pending
from together_dash.catalog import tasks as catalog_tasks
from together_dash.catalog.models import ModelInfo
from together_dash.keys.models import TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.pollers.models import PollerHeartbeat
from together_dash.proxy.testing import running_proxy
from together_dash.simulator import catalog
from together_dash.simulator.testing import RunningSimulator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_connections")]

DOWN_MINUTES = 5
DEFAULT_QUEUE = "celery"  # where the proxy's recording path sends deliver_notification
WORKER_EMAIL_TIMEOUT = 2  # seconds; production's is EMAIL_TIMEOUT (10 by default)
CHAT = {"model": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def smtp(settings: object) -> Iterator[SmtpServer]:
    """Django's SMTP backend pointed at a loopback port where nothing listens until the test starts it."""
    server = SmtpServer()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.ALERT_EMAILS = [BILLING_OWNER]
    yield server
    server.stop()


@pytest.fixture
def key(transactional_db: None) -> TogetherKey:
    AlertRule.ensure_defaults()
    return TogetherKey.create("prod-main", "tk-test-secret-000000000000001")


def test_an_alert_fired_while_smtp_is_down_for_minutes_is_delivered_once_when_it_returns(
    smtp: SmtpServer, key: TogetherKey
) -> None:
    """Promise: SMTP down for minutes loses no billing email and doubles none.

    The first attempt and every once-a-minute sweep (beat's redeliver_alerts) really connect and are
    refused; the row stays pending with the error, and the sweep's heartbeat says mail is stuck. When the
    server is back, the next sweep sends one email; the task's own late retry and later sweeps send
    nothing more. Minutes pass on the clock (time-machine), not on the wall.
    """
    with time_machine.travel(datetime.now(UTC), tick=False) as clock:
        notification = fire_billing(key.pk, timezone.now(), "traffic")
        assert notification is not None

        def row() -> Notification:
            return Notification.objects.get(pk=notification.pk)

        with pytest.raises(DeliveryError, match="Connection ?[Rr]efused"):
            deliver(notification.pk)  # what deliver_notification does, as the billing hook enqueued it
        for _ in range(DOWN_MINUTES):
            clock.shift(60)
            redeliver_pending.apply()
            assert row().status == Notification.Status.PENDING
            assert "still pending" in _sweep().last_error and _sweep().is_failing
        assert "Connection refused" in row().last_error or "ConnectionRefused" in row().last_error
        assert smtp.inbox.messages == []

        smtp.start()
        clock.shift(60)
        redeliver_pending.apply()
        assert row().status == Notification.Status.SENT
        assert not deliver(notification.pk)  # the task's retry, due after the sweep got there first
        for _ in range(2):
            clock.shift(60)
            redeliver_pending.apply()

    assert len(smtp.inbox.messages) == 1
    assert smtp.inbox.envelopes[0][1] == [BILLING_OWNER]
    assert "Credits exhausted on key prod-main" in smtp.inbox.subjects[0]
    assert (row().attempts, row().last_error) == (DOWN_MINUTES + 2, "")
    assert not _sweep().is_failing


def _sweep() -> PollerHeartbeat:
    return PollerHeartbeat.objects.get(name=REDELIVERY_TASK)


def test_a_hung_smtp_server_never_holds_up_the_proxy_and_costs_a_worker_only_its_timeout(
    fresh_simulator: RunningSimulator, key: TogetherKey, tmp_path: Path, settings: object
) -> None:
    """Promise: an SMTP server that accepts and never answers blocks nothing for long.

    A 402 through the proxy fires the billing alert; a real worker takes the email and hangs on the
    server. Meanwhile the proxy answers as fast as ever (it never talks SMTP), the worker gives up after
    EMAIL_TIMEOUT and puts the row back to pending with the error (not stuck in "sending"), and the
    next task on the same single-process worker runs within a few timeouts.
    """
    redis_broker()
    assert settings.EMAIL_TIMEOUT, "EMAIL_TIMEOUT must be set: smtplib without one waits forever"
    settings.ALERT_EMAILS = [BILLING_OWNER]
    app_key = create_app_key("faults")[1]
    silent = SilentServer()
    env = {
        "EMAIL_URL": f"smtp://127.0.0.1:{silent.port}",
        "EMAIL_TIMEOUT": str(WORKER_EMAIL_TIMEOUT),
        "TOGETHER_BASE_URL": fresh_simulator.base_url,
    }
    purge(DEFAULT_QUEUE)
    try:
        with (
            Worker("worker", DEFAULT_QUEUE, tmp_path, env) as worker,
            running_proxy(fresh_simulator.base_url) as proxy,
            httpx.Client(base_url=proxy.base_url, headers={"Authorization": f"Bearer {app_key}"}) as client,
        ):
            assert _timed(client, "402") < 1.0
            assert proxy.proxy.drain_logs()
            worker.wait(lambda: _billing_email(Notification.Status.SENDING), "no worker took the email")

            elapsed = [_timed(client, fault) for fault in ("402", "", "402", "", "")]
            assert max(elapsed) < 1.0, f"proxy answers took {elapsed} s while SMTP hung"

            worker.wait(
                lambda: _billing_email(Notification.Status.PENDING, with_error=True),
                "the worker did not give up on the hung server",
                seconds=3 * WORKER_EMAIL_TIMEOUT,
            )
            catalog_tasks.poll_models.apply_async(queue=DEFAULT_QUEUE)
            worker.wait(
                lambda: ModelInfo.objects.count() == len(catalog.MODELS),
                "the next task waited on the hung SMTP server",
                seconds=3 * WORKER_EMAIL_TIMEOUT + 5,
            )
    finally:
        silent.close()
        purge(DEFAULT_QUEUE)  # the email's retry, put back on the queue when the worker stopped

    assert Notification.objects.count() == 1


def _billing_email(status: str, with_error: bool = False) -> bool:
    rows = Notification.objects.filter(status=status, attempts__gte=1)
    return (rows.exclude(last_error="") if with_error else rows).exists()


def _timed(client: httpx.Client, fault: str) -> float:
    started = time.perf_counter()
    response = client.post("/chat/completions", json=CHAT, headers={"X-Simulate": fault} if fault else {})
    assert response.status_code == (402 if fault else 200)
    return time.perf_counter() - started
