"""deliver_notification through a real `celery worker`: retried with backoff while SMTP is down, sent once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.alerts.conftest import SmtpServer
from tests.pollers.test_celery_worker import CeleryWorker, WorkerDatabase
from together_dash.alerts.evaluation import fire_billing
from together_dash.alerts.models import Notification
from together_dash.alerts.tasks import deliver_notification
from together_dash.keys.models import TogetherKey

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


def test_the_task_retries_while_smtp_is_down_and_the_email_arrives_once(
    smtp_down: SmtpServer, key: TogetherKey, tmp_path: Path
) -> None:
    notification = fire_billing(key.pk, datetime.now(UTC), "traffic")
    assert notification is not None
    worker = CeleryWorker(WorkerDatabase(tmp_path), "http://127.0.0.1:9/v1", tmp_path / "worker.log")
    worker.env["EMAIL_URL"] = f"smtp://127.0.0.1:{smtp_down.port}"

    def row() -> Notification:
        return Notification.objects.get(pk=notification.pk)

    with worker:
        task_id = deliver_notification.apply_async(args=[notification.pk], queue=worker.queue).id
        worker.wait_for(lambda: row().attempts >= 2)
        assert row().status == Notification.Status.PENDING
        assert "Connection refused" in row().last_error or "ConnectionRefused" in row().last_error
        smtp_down.start()
        worker.wait_for(lambda: row().status == Notification.Status.SENT)
        # Retries keep the task id; once a run returns without retrying, no run (and no email) is left.
        worker.wait_for_success(task_id)

    assert len(smtp_down.inbox.messages) == 1
    assert "Credits exhausted on key prod-main" in smtp_down.inbox.subjects[0]
