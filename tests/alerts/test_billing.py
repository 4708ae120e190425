"""The billing alert: the first 402 on a key emails the billing owner once; the first success, once more."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.alerts.conftest import BILLING_OWNER, Inbox
from tests.alerts.helpers import MODEL, payment_required, record, record_402_storm, success
from together_dash.alerts.delivery import deliver_pending
from together_dash.alerts.kinds import Kind
from together_dash.alerts.models import Alert, AlertEvent, AlertRule, Notification
from together_dash.alerts.tasks import on_recorded
from together_dash.catalog.models import ModelInfo
from together_dash.jobs.models import BatchJob
from together_dash.keys.models import TogetherKey
from together_dash.traffic.recording import KeyOutcome, RecordResult, record_entries

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def priced_model() -> None:
    """The model of the successful calls has a price: only billing alerts are about these requests."""
    ModelInfo.objects.create(model_id=MODEL, pricing_input=Decimal("0.88"), pricing_output=Decimal("0.88"))


def test_a_storm_of_402s_through_record_entries_sends_one_email(
    django_capture_on_commit_callbacks: object, inbox: Inbox, key: TogetherKey
) -> None:
    start = record_402_storm(django_capture_on_commit_callbacks, key.pk)
    deliver_pending()
    deliver_pending()

    assert len(inbox.messages) == 1
    assert inbox.envelopes[0][1] == [BILLING_OWNER]
    assert "Credits exhausted on key prod-main" in inbox.subjects[0]
    text = inbox.text()
    assert "add credits" in text
    assert "Failed requests since:    500" in text
    assert f"{start:%Y-%m-%d %H:%M:%S}" in text
    assert f"https://dash.example.com/dashboard/keys/{key.pk}/" in text
    assert "prod-main" in inbox.html()
    assert Notification.objects.count() == 1


def test_the_first_success_after_402s_sends_one_resolved_notice(
    django_capture_on_commit_callbacks: object, inbox: Inbox, key: TogetherKey
) -> None:
    record(django_capture_on_commit_callbacks, [payment_required(key.pk) for _ in range(30)])
    deliver_pending()
    record(django_capture_on_commit_callbacks, [success(key.pk)])
    record(django_capture_on_commit_callbacks, [success(key.pk) for _ in range(10)])
    deliver_pending()

    assert len(inbox.messages) == 2
    assert "RESOLVED: credits are back on key prod-main" in inbox.subjects[1]
    assert "Failed requests (402):    30" in inbox.text(1)
    alert = Alert.objects.get(rule__kind=Kind.BILLING)
    assert alert.state == Alert.State.RESOLVED
    assert list(alert.events.values_list("transition", flat=True)) == ["resolved", "fired"]


def test_a_free_call_succeeding_does_not_resolve_the_billing_alert(
    django_capture_on_commit_callbacks: object, inbox: Inbox, key: TogetherKey
) -> None:
    """GET /models answers 200 with no credits left: only a billed call's success means they are back."""
    record(django_capture_on_commit_callbacks, [payment_required(key.pk)])
    free = success(key.pk)
    free.method, free.endpoint, free.model_requested = "GET", "/v1/models", ""
    record(django_capture_on_commit_callbacks, [free])
    deliver_pending()

    assert Alert.objects.get(rule__kind=Kind.BILLING).state == Alert.State.FIRING
    assert len(inbox.messages) == 1

    record(django_capture_on_commit_callbacks, [success(key.pk)])
    deliver_pending()
    assert Alert.objects.get(rule__kind=Kind.BILLING).state == Alert.State.RESOLVED


def test_credits_running_out_again_fires_again(
    django_capture_on_commit_callbacks: object, inbox: Inbox, key: TogetherKey
) -> None:
    record(django_capture_on_commit_callbacks, [payment_required(key.pk)])
    record(django_capture_on_commit_callbacks, [success(key.pk)])
    record(django_capture_on_commit_callbacks, [payment_required(key.pk)])
    deliver_pending()

    # Three emails for the same people at once would be a digest; the default digest minimum is 4.
    assert len(inbox.messages) == 3
    assert "Credits exhausted" in inbox.subjects[2]
    assert Alert.objects.get().fire_count == 2


def test_a_batch_with_402s_and_successes_on_one_key_does_not_resolve(
    django_capture_on_commit_callbacks: object, inbox: Inbox, key: TogetherKey
) -> None:
    record(django_capture_on_commit_callbacks, [payment_required(key.pk)])
    record(django_capture_on_commit_callbacks, [success(key.pk), payment_required(key.pk)])

    assert Alert.objects.get().state == Alert.State.FIRING
    assert AlertEvent.objects.count() == 1


def test_successes_on_a_key_that_never_failed_write_nothing(
    django_capture_on_commit_callbacks: object, inbox: Inbox, key: TogetherKey
) -> None:
    record(django_capture_on_commit_callbacks, [success(key.pk) for _ in range(5)])

    assert not Alert.objects.exists()
    assert not Notification.objects.exists()


def test_the_email_names_the_interrupted_batch_and_its_remainder(inbox: Inbox, key: TogetherKey) -> None:
    BatchJob.objects.create(
        batch_id="batch-abc",
        upstream_key=key,
        status="FAILED",
        error="Insufficient credits (402)",
        remainder_count=1234,
        remainder_file="batch-abc.jsonl",
    )
    on_recorded(
        RecordResult(
            keys={key.pk: KeyOutcome(payment_required=1, first_payment_required_at=datetime.now(UTC))}
        )
    )
    deliver_pending()

    text = inbox.text()
    assert "Batch batch-abc was interrupted: 1234 requests" in text
    assert "https://dash.example.com/batches/batch-abc/remainder.jsonl" in text


def test_a_disabled_billing_rule_sends_nothing(inbox: Inbox, key: TogetherKey) -> None:
    AlertRule.objects.filter(kind=Kind.BILLING).update(enabled=False)
    on_recorded(
        RecordResult(
            keys={key.pk: KeyOutcome(payment_required=5, first_payment_required_at=datetime.now(UTC))}
        )
    )
    deliver_pending()

    assert inbox.messages == []


def test_an_alert_failure_never_fails_recording(
    django_capture_on_commit_callbacks: object,
    key: TogetherKey,
    monkeypatch: pytest.MonkeyPatch,
    settings: object,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("alerts are broken")

    monkeypatch.setattr(Alert, "fire", broken)
    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
        result = record_entries([payment_required(key.pk)])

    assert result.created == 1
    assert not Notification.objects.exists()


def test_a_402_seen_by_a_poller_fires_the_billing_alert(inbox: Inbox, key: TogetherKey) -> None:
    from together_dash.alerts.tasks import evaluate_alerts_now
    from together_dash.pollers.models import PollerKeyState

    PollerKeyState.objects.create(
        poller="poll_rate_limits",
        key=key,
        last_error_kind="insufficient_credits",
        last_error_at=datetime.now(UTC),
    )
    evaluate_alerts_now()
    evaluate_alerts_now()
    deliver_pending()

    billing = [s for s in inbox.subjects if "Credits exhausted" in s]
    assert billing == ["[together-dash] Credits exhausted on key prod-main (HTTP 402)"]
    assert "poller poll_rate_limits" in inbox.text(inbox.subjects.index(billing[0]))


def test_the_backstop_does_not_fire_again_for_an_outage_that_already_recovered(
    django_capture_on_commit_callbacks: object, inbox: Inbox, key: TogetherKey
) -> None:
    from together_dash.alerts.tasks import evaluate_alerts_now

    record(django_capture_on_commit_callbacks, [payment_required(key.pk)])
    record(django_capture_on_commit_callbacks, [success(key.pk)])
    evaluate_alerts_now()
    deliver_pending()

    assert len(inbox.messages) == 2
    assert Alert.objects.get(rule__kind=Kind.BILLING).state == Alert.State.RESOLVED


def test_a_poller_402_older_than_the_recovery_does_not_fire_again(
    django_capture_on_commit_callbacks: object, inbox: Inbox, key: TogetherKey
) -> None:
    from together_dash.alerts.tasks import evaluate_alerts_now
    from together_dash.pollers.models import PollerKeyState

    PollerKeyState.objects.create(
        poller="poll_rate_limits",
        key=key,
        last_error_kind="insufficient_credits",
        last_error_at=datetime.now(UTC),
    )
    evaluate_alerts_now()
    record(django_capture_on_commit_callbacks, [success(key.pk)])  # credits added; the poller has not rerun
    evaluate_alerts_now()
    deliver_pending()

    assert inbox.subjects == [
        "[together-dash] Credits exhausted on key prod-main (HTTP 402)",
        "[together-dash] RESOLVED: credits are back on key prod-main",
    ]
