"""A Celery worker killed with SIGKILL in the middle of a task: the work is finished elsewhere, once.

The first two tests run two real `celery worker` processes on one queue of the Redis broker. Worker A
takes the task and is stopped inside its network call (a slow upstream, a slow SMTP server); its whole
process group gets SIGKILL, so it neither acknowledges the task nor gives it back. The promise rests on
the settings: acks_late keeps the task on the broker until it is done, and the Redis visibility timeout
hands an unacknowledged task to another worker. The task keeps its id, which is the poll's lease token
and the email's claim token, so worker B takes over what A left half-done instead of waiting it out.
The last test kills only the pool process: the surviving worker requeues the task at once
(task_reject_on_worker_lost).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.utils.module_loading import import_string

from tests.alerts.conftest import BILLING_OWNER
from tests.faults._celery import TEST_VISIBILITY_TIMEOUT, Worker, new_queue, redis_broker
from tests.faults._smtp import SlowToAccept, slow_smtp_server
from together_dash.alerts.delivery import deliver_pending
from together_dash.alerts.evaluation import fire_billing
from together_dash.alerts.models import AlertRule, Notification
from together_dash.alerts.tasks import deliver_notification
from together_dash.catalog import tasks as catalog_tasks
from together_dash.catalog.models import ModelChange, ModelInfo
from together_dash.keys.models import RateLimitSnapshot, TogetherKey
from together_dash.pollers.models import PollerHeartbeat, PollerKeyState
from together_dash.pollers.schedule import BY_NAME
from together_dash.pollers.testing import add_key
from together_dash.simulator import catalog
from together_dash.simulator.testing import RunningSimulator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_connections")]

KEYS = 2
# Long enough that worker A is surely still inside GET /models when it dies.
HANGING_UPSTREAM_MS = 60_000
# After B is done: more than the visibility timeout plus a restore sweep, so a second hand-out of the
# same task would have run by the time the test counts.
SETTLE_SECONDS = TEST_VISIBILITY_TIMEOUT + 4


@pytest.mark.parametrize("poller", ["poll_models", "poll_rate_limits"])
def test_a_poll_killed_mid_call_completes_once_on_another_worker(
    poller: str, fresh_simulator: RunningSimulator, tmp_path: Path
) -> None:
    """Promise: a poll whose worker is SIGKILLed mid-HTTP-call runs to the end on another worker, once.

    Once means: the catalog has one row per upstream model id (poll_models) or one probe snapshot per key
    (poll_rate_limits), the heartbeat counts one finished run and no error, the lease is released, and
    worker B ran the very task A took (same id), once.
    """
    redis_broker()
    for index in range(KEYS):
        add_key(f"key-{index}")
    queue = new_queue("faults-poll")
    env = {"TOGETHER_BASE_URL": fresh_simulator.base_url}
    worker_a, worker_b = Worker("worker-a", queue, tmp_path, env), Worker("worker-b", queue, tmp_path, env)
    fresh_simulator.set_scenario(latency_ms=HANGING_UPSTREAM_MS)
    try:
        worker_a.start()
        task_id = import_string(BY_NAME[poller].task).apply_async(queue=queue).id
        worker_a.wait(lambda: _lease_holder(poller) == task_id, "worker A did not start the poll")
        time.sleep(1)  # past the claim and into the key's GET /models, which hangs
        worker_a.kill()
        fresh_simulator.set_scenario(latency_ms=0)
        assert _heartbeat(poller).run_count == 0, "worker A finished the poll before it was killed"

        worker_b.start()
        worker_b.wait(lambda: _heartbeat(poller).run_count > 0, "worker B did not finish the poll")
        time.sleep(SETTLE_SECONDS)
    finally:
        worker_a.stop()
        worker_b.stop()

    assert worker_a.task_ids("received") == [task_id]
    assert worker_b.task_ids("received") == [task_id], worker_b.log_tail("B ran other or repeated tasks")
    assert worker_b.task_ids("succeeded") == [task_id]
    heartbeat = _heartbeat(poller)
    assert (heartbeat.run_count, heartbeat.error_count) == (1, 0)
    assert heartbeat.last_report["ok"] == KEYS
    assert (heartbeat.run_token, heartbeat.running_since) == ("", None)
    states = PollerKeyState.objects.filter(poller=poller)
    assert sorted(states.values_list("consecutive_failures", flat=True)) == [0] * KEYS
    assert not states.filter(last_success__isnull=True).exists()
    _assert_one_poll_of_effects(poller)


def _assert_one_poll_of_effects(poller: str) -> None:
    if poller == "poll_models":
        ids = list(ModelInfo.objects.values_list("model_id", flat=True))
        assert sorted(ids) == sorted(model.id for model in catalog.MODELS)
        # The first poll of an empty catalog is a baseline: a second poll of the same catalog adds no
        # change either, so the row count above is what would show a doubled insert.
        assert ModelChange.objects.count() == 0
    else:
        probes = RateLimitSnapshot.objects.filter(source=RateLimitSnapshot.Source.PROBE)
        assert sorted(probes.values_list("key__name", flat=True)) == [f"key-{i}" for i in range(KEYS)]


def _heartbeat(poller: str) -> PollerHeartbeat:
    return PollerHeartbeat.objects.filter(name=poller).first() or PollerHeartbeat(name=poller)


def _lease_holder(poller: str) -> str:
    return _heartbeat(poller).run_token


def test_an_alert_email_killed_mid_send_arrives_once_from_another_worker(
    tmp_path: Path, settings: object
) -> None:
    """Promise: an alert email whose worker is SIGKILLed mid-SMTP-conversation is delivered once, by another.

    Worker A is killed while the server holds its RCPT, before the message was sent: the server never
    had it. Worker B reclaims the notification A left in "sending" and the inbox gets exactly one email;
    the outbox row is sent after two attempts, and a later sweep sends nothing more. (Killed after the
    server accepted the DATA but before the row was marked sent, the email would go twice: the
    at-least-once window that alerts/delivery.py chooses over a lost billing alert.)
    """
    redis_broker()
    settings.ALERT_EMAILS = [BILLING_OWNER]
    AlertRule.ensure_defaults()
    key = TogetherKey.create("prod-main", "tk-test-secret-000000000000001")
    notification = fire_billing(key.pk, datetime.now(UTC), "traffic")
    assert notification is not None and notification.status == Notification.Status.PENDING
    smtp = slow_smtp_server()
    inbox = smtp.inbox
    assert isinstance(inbox, SlowToAccept)
    queue = new_queue("faults-alert")
    env = {"EMAIL_URL": f"smtp://127.0.0.1:{smtp.port}"}
    worker_a, worker_b = Worker("worker-a", queue, tmp_path, env), Worker("worker-b", queue, tmp_path, env)

    def row() -> Notification:
        return Notification.objects.get(pk=notification.pk)

    try:
        smtp.start()
        worker_a.start()
        task_id = deliver_notification.apply_async(args=[notification.pk], queue=queue).id
        worker_a.wait(inbox.recipient_asked.is_set, "worker A did not reach the SMTP server")
        worker_a.kill()
        assert (row().status, row().attempts) == (Notification.Status.SENDING, 1)
        inbox.holding.clear()  # the server answers at once from now on

        worker_b.start()
        worker_b.wait(lambda: row().status == Notification.Status.SENT, "worker B did not send the email")
        time.sleep(SETTLE_SECONDS)
        assert deliver_pending() == 0
    finally:
        worker_a.stop()
        worker_b.stop()
        smtp.stop()

    assert len(inbox.messages) == 1
    assert inbox.envelopes[0][1] == [BILLING_OWNER]
    assert "Credits exhausted on key prod-main" in inbox.subjects[0]
    sent = row()
    assert (sent.attempts, sent.last_error) == (2, "")
    assert worker_b.task_ids("succeeded") == [task_id]


def test_a_poll_whose_pool_process_is_killed_is_run_again_at_once_by_the_same_worker(
    fresh_simulator: RunningSimulator, tmp_path: Path
) -> None:
    """Promise: a poll whose pool process dies (SIGKILL, out of memory) while the worker lives is run again
    at once, and once: task_reject_on_worker_lost gives it back to the queue instead of acknowledging it
    as failed, with no visibility timeout to wait out.
    """
    redis_broker()
    add_key("key-0")
    queue = new_queue("faults-pool")
    # No hand-over by visibility timeout within this test: only the requeue can bring the task back.
    worker = Worker("worker", queue, tmp_path, {
        "TOGETHER_BASE_URL": fresh_simulator.base_url, "CELERY_BROKER_VISIBILITY_TIMEOUT": "3600",
    })  # fmt: skip
    fresh_simulator.set_scenario(latency_ms=HANGING_UPSTREAM_MS)
    with worker:
        task_id = catalog_tasks.poll_models.apply_async(queue=queue).id
        worker.wait(lambda: _lease_holder("poll_models") == task_id, "the worker did not start the poll")
        time.sleep(1)  # inside the key's GET /models, which hangs
        fresh_simulator.set_scenario(latency_ms=0)
        worker.kill_pool_process()
        worker.wait(lambda: _heartbeat("poll_models").run_count > 0, "the poll was not run again")
        time.sleep(2)

    assert "WorkerLostError" in worker.output()
    assert worker.task_ids("received") == [task_id, task_id]
    assert worker.task_ids("succeeded") == [task_id]
    heartbeat = _heartbeat("poll_models")
    assert (heartbeat.run_count, heartbeat.error_count, heartbeat.run_token) == (1, 0, "")
    _assert_one_poll_of_effects("poll_models")
