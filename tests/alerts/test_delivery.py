"""The outbox: nothing lost while SMTP is down, nothing sent twice by racing workers; digests, mutes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.db import OperationalError, connections

from tests.alerts.conftest import BILLING_OWNER, Inbox, SmtpServer
from tests.alerts.helpers import payment_required
from together_dash.alerts.delivery import DeliveryError, deliver, deliver_pending
from together_dash.alerts.evaluation import fire_billing
from together_dash.alerts.kinds import Kind
from together_dash.alerts.models import Alert, AlertRule, Mute, Notification
from together_dash.alerts.tasks import evaluate_alerts_now
from together_dash.keys.models import TogetherKey
from together_dash.pollers.models import PollerHeartbeat
from together_dash.traffic.recording import record_entries


def fire(key: TogetherKey) -> Notification:
    notification = fire_billing(key.pk, datetime.now(UTC), "traffic")
    assert notification is not None
    return notification


@pytest.mark.django_db
def test_while_smtp_is_down_it_stays_pending_with_its_error_then_arrives_once(
    smtp_down: SmtpServer, key: TogetherKey
) -> None:
    notification = fire(key)
    with pytest.raises(DeliveryError):
        deliver(notification.pk)
    assert deliver_pending() == 0

    notification.refresh_from_db()
    assert notification.status == Notification.Status.PENDING
    assert notification.attempts == 2
    assert "Connection refused" in notification.last_error or "ConnectionRefused" in notification.last_error

    smtp_down.start()
    assert deliver_pending() == 1
    assert deliver_pending() == 0
    assert not deliver(notification.pk)

    notification.refresh_from_db()
    assert len(smtp_down.inbox.messages) == 1
    assert notification.status == Notification.Status.SENT
    assert notification.last_error == ""
    assert notification.sent_at is not None


@pytest.mark.django_db
def test_the_smtp_password_never_shows_in_the_last_error(
    smtp: SmtpServer, key: TogetherKey, settings: object
) -> None:
    # aiosmtpd without auth refuses AUTH; the error must not carry the password Django tried.
    settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = "alerts", "hunter2-smtp-password"
    notification = fire(key)
    with pytest.raises(DeliveryError):
        deliver(notification.pk)

    notification.refresh_from_db()
    assert notification.status == Notification.Status.PENDING
    assert notification.last_error
    assert "hunter2" not in notification.last_error


@pytest.mark.django_db
def test_a_worker_that_died_mid_send_is_taken_over_after_the_lease(inbox: Inbox, key: TogetherKey) -> None:
    notification = fire(key)
    Notification.objects.filter(pk=notification.pk).update(
        status=Notification.Status.SENDING, claimed_at=datetime.now(UTC)
    )
    assert deliver_pending() == 0
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=6)):
        assert deliver_pending() == 1
    assert len(inbox.messages) == 1


def _race(target: object, *args: object) -> list[object]:
    results: list[object] = []
    barrier = threading.Barrier(2)

    def worker() -> None:
        try:
            barrier.wait()
            results.append(target(*args))  # type: ignore[operator]
        except OperationalError as exc:
            # SQLite's shared in-memory test database refuses the loser with "table is locked" instead
            # of making it wait; either way it did not write a second notification.
            assert "locked" in str(exc)
            results.append(None)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_to_deliver_send_one_email(inbox: Inbox, key: TogetherKey) -> None:
    for _ in range(5):
        notification = fire(key)
        results = _race(deliver, notification.pk)
        assert results.count(True) == 1
        Alert.objects.update(state=Alert.State.RESOLVED)
    assert len(inbox.messages) == 5


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_to_fire_write_one_notification(
    inbox: Inbox, key: TogetherKey, settings: object
) -> None:
    settings.ALERT_DIGEST_MIN = 100
    for round_ in range(5):
        results = _race(fire_billing, key.pk, datetime.now(UTC), "traffic")
        assert len([r for r in results if r is not None]) == 1, round_
        Alert.objects.update(state=Alert.State.RESOLVED)
    assert Notification.objects.count() == 5
    deliver_pending()
    assert len(inbox.messages) == 5


@pytest.mark.django_db
def test_many_alerts_at_once_go_out_as_one_digest(inbox: Inbox, rules: None) -> None:
    for name in ("poll_models", "poll_rate_limits", "poll_fine_tunes", "poll_batches", "check_keys"):
        PollerHeartbeat.objects.create(
            name=name, interval_seconds=60, created_at=datetime.now(UTC) - timedelta(hours=1)
        )
    evaluate_alerts_now()
    deliver_pending()

    assert len(inbox.messages) == 1
    assert inbox.subjects[0] == "[together-dash] 5 alerts"
    assert "poller check_keys" in inbox.text() and "poller poll_models" in inbox.text()
    assert set(Notification.objects.values_list("status", "digest_size")) == {("sent", 5)}


@pytest.mark.django_db
def test_a_few_alerts_at_once_go_out_one_by_one(inbox: Inbox, rules: None) -> None:
    for name in ("poll_models", "poll_batches"):
        PollerHeartbeat.objects.create(
            name=name, interval_seconds=60, created_at=datetime.now(UTC) - timedelta(hours=1)
        )
    evaluate_alerts_now()
    deliver_pending()

    assert sorted(inbox.subjects) == [
        "[together-dash] Poller stale: poller poll_batches",
        "[together-dash] Poller stale: poller poll_models",
    ]


@pytest.mark.django_db
def test_a_user_who_muted_the_rule_gets_no_email_and_others_still_do(
    inbox: Inbox, key: TogetherKey, settings: object
) -> None:
    settings.ALERT_EMAILS = [BILLING_OWNER, "oncall@example.com"]
    user = User.objects.create_user("oncall", email="oncall@example.com")
    Mute.objects.create(user=user, rule=AlertRule.objects.get(kind=Kind.BILLING))
    fire(key)
    deliver_pending()

    assert inbox.envelopes[0][1] == [BILLING_OWNER]


@pytest.mark.django_db
def test_without_recipients_the_notification_is_skipped_and_says_why(
    smtp: SmtpServer, key: TogetherKey, settings: object
) -> None:
    settings.ALERT_EMAILS = []
    notification = fire(key)

    assert notification.status == Notification.Status.SKIPPED
    assert "ALERT_EMAILS" in notification.last_error
    assert deliver_pending() == 0


@pytest.mark.django_db
def test_the_rule_recipients_get_it_too(inbox: Inbox, key: TogetherKey) -> None:
    AlertRule.objects.filter(kind=Kind.BILLING).update(recipients="cfo@example.com, ops@example.com")
    fire(key)
    deliver_pending()

    assert inbox.envelopes[0][1] == ["billing-owner@example.com", "cfo@example.com", "ops@example.com"]


@pytest.mark.django_db
def test_a_reminder_goes_out_after_the_renotify_interval_only(inbox: Inbox, key: TogetherKey) -> None:
    AlertRule.objects.filter(kind=Kind.BILLING).update(renotify_minutes=60)
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        fire(key)
    with time_machine.travel(start + timedelta(minutes=30), tick=False):
        evaluate_alerts_now()
    with time_machine.travel(start + timedelta(minutes=61), tick=False):
        evaluate_alerts_now()
        evaluate_alerts_now()
    with time_machine.travel(start + timedelta(minutes=90), tick=False):
        evaluate_alerts_now()
        deliver_pending()

    assert len(inbox.messages) == 2
    assert inbox.subjects[1].startswith("[together-dash] STILL FIRING: Credits exhausted on key prod-main")


@pytest.mark.django_db
def test_the_reminder_counts_the_requests_that_failed_since(
    django_capture_on_commit_callbacks: object, inbox: Inbox, key: TogetherKey
) -> None:
    AlertRule.objects.filter(kind=Kind.BILLING).update(renotify_minutes=60)
    start = datetime.now(UTC)
    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
        record_entries([payment_required(key.pk, start) for _ in range(3)])
    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
        record_entries([payment_required(key.pk, start + timedelta(minutes=5)) for _ in range(7)])
    with time_machine.travel(start + timedelta(minutes=61), tick=False):
        evaluate_alerts_now()
        deliver_pending()

    assert "Failed requests since:    3" in inbox.text(0)
    assert "Failed requests since:    10" in inbox.text(1)
