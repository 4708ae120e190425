"""Alert channels through the one outbox, against real HTTP receivers on loopback.

Slack, webhook and PagerDuty each get their own shape; a receiver that is down, refuses or asks to wait
gets the message once when it answers 2xx; one send per channel per transition however many 402s.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from tests.alerts.conftest import BILLING_OWNER, Inbox
from tests.alerts.helpers import payment_required, record, record_402_storm, success
from tests.alerts.receivers import Answer, Receiver
from tests.alerts.test_delivery import _race
from together_dash.alerts.delivery import DeliveryError, deliver, deliver_pending
from together_dash.alerts.evaluation import fire_billing
from together_dash.alerts.kinds import Kind
from together_dash.alerts.models import Alert, AlertChannel, Notification
from together_dash.alerts.services import add_channel
from together_dash.alerts.tasks import evaluate_alerts_now
from together_dash.keys.models import TogetherKey
from together_dash.pollers.models import PollerHeartbeat

WEBHOOK_SECRET = "whsec-test-0123456789abcdef"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefPDkey1"
SLACK_PATH = "/services/T0001/B0002/sl4ckT0kenSecretPart"
REPLAY_WINDOW = 300


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> bool:
    """The receiver's check, as the README documents it: HMAC-SHA256 over "<timestamp>.<body>", fresh."""
    timestamp = headers.get("x-together-dash-timestamp", "")
    signature = headers.get("x-together-dash-signature", "")
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > REPLAY_WINDOW:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature, f"sha256={expected}")


def webhook(receiver: Receiver, **kwargs: object) -> AlertChannel:
    return add_channel("webhook", receiver.url, secret=WEBHOOK_SECRET, **kwargs)[0]  # type: ignore[arg-type]


def slack(receiver: Receiver) -> AlertChannel:
    return add_channel("slack", f"http://127.0.0.1:{receiver.port}{SLACK_PATH}")[0]


def pagerduty(receiver: Receiver) -> AlertChannel:
    return add_channel("pagerduty", receiver.url, secret=ROUTING_KEY)[0]


def all_channels(receivers: dict[str, Receiver]) -> None:
    slack(receivers["slack"])
    webhook(receivers["webhook"])
    pagerduty(receivers["pagerduty"])


def fire(key: TogetherKey) -> Notification:
    notification = fire_billing(key.pk, datetime.now(UTC), "traffic")
    assert notification is not None
    return notification


def row_of(channel: AlertChannel) -> Notification:
    return Notification.objects.get(channel=channel)


pytestmark = pytest.mark.django_db


# ---- delivered once ----------------------------------------------------------------------------------


def test_a_webhook_receiver_down_then_up_gets_the_message_once(
    receiver_down: Receiver, key: TogetherKey
) -> None:
    channel = webhook(receiver_down)
    fire(key)
    with pytest.raises(DeliveryError, match="Connect"):
        deliver(row_of(channel).pk)
    assert deliver_pending() == 0

    row = row_of(channel)
    assert (row.status, row.attempts) == (Notification.Status.PENDING, 2)
    assert "Connection refused" in row.last_error or "ConnectError" in row.last_error

    receiver_down.start()
    assert deliver_pending() == 1
    assert deliver_pending() == 0
    assert not deliver(row.pk)

    row.refresh_from_db()
    assert len(receiver_down.requests) == 1
    assert (row.status, row.last_error, row.attempts) == (Notification.Status.SENT, "", 3)
    assert row.sent_at is not None


def test_a_storm_of_10000_402s_gives_one_message_per_channel_and_one_email(
    django_capture_on_commit_callbacks: object, inbox: Inbox, receivers: dict[str, Receiver], key: TogetherKey
) -> None:
    all_channels(receivers)
    record_402_storm(django_capture_on_commit_callbacks, key.pk)
    deliver_pending()
    deliver_pending()

    assert {kind: len(each.requests) for kind, each in receivers.items()} == {
        "slack": 1,
        "webhook": 1,
        "pagerduty": 1,
    }
    assert len(inbox.messages) == 1
    assert inbox.envelopes[0][1] == [BILLING_OWNER]
    assert Notification.objects.count() == 4
    assert set(Notification.objects.values_list("status", flat=True)) == {"sent"}


@pytest.mark.django_db(transaction=True)
def test_one_send_per_channel_per_transition_when_two_workers_race(
    receivers: dict[str, Receiver], key: TogetherKey, settings: object
) -> None:
    settings.ALERT_DIGEST_MIN = 100
    all_channels(receivers)
    for round_ in range(3):
        results = _race(fire_billing, key.pk, datetime.now(UTC), "traffic")
        assert len([r for r in results if r is not None]) == 1, round_
        for row in Notification.objects.filter(status=Notification.Status.PENDING):
            assert _race(deliver, row.pk).count(True) == 1
        Alert.objects.update(state=Alert.State.RESOLVED)

    assert {kind: len(each.requests) for kind, each in receivers.items()} == {
        "slack": 3,
        "webhook": 3,
        "pagerduty": 3,
    }


# ---- the shapes ---------------------------------------------------------------------------------------


def test_slack_gets_text_and_blocks_with_the_summary_and_links(receiver: Receiver, key: TogetherKey) -> None:
    slack(receiver)
    fire(key)
    deliver_pending()

    (request,) = receiver.requests
    body = request.json
    assert request.path == SLACK_PATH
    assert body["text"].startswith("Credits exhausted on key prod-main (HTTP 402)")
    section = body["blocks"][0]["text"]["text"]
    assert "Credits exhausted on key prod-main" in section and "HTTP 402 (insufficient credits)" in section
    assert "api.together.ai/settings/billing" in body["blocks"][1]["text"]["text"]
    links = body["blocks"][-1]["elements"][0]["text"]
    alert = Alert.objects.get()
    assert f"<https://dash.example.com/alerts/{alert.pk}/|Open the alert>" in links
    assert f"<https://dash.example.com/dashboard/keys/{key.pk}/|Details>" in links


def test_the_webhook_gets_the_alert_as_json_signed_so_the_receiver_can_verify_it(
    receiver: Receiver, key: TogetherKey
) -> None:
    webhook(receiver)
    fire(key)
    deliver_pending()

    (request,) = receiver.requests
    alert = Alert.objects.get()
    body = request.json
    assert body["alert"] == {
        "id": alert.pk,
        "kind": "billing",
        "subject": f"key:{key.pk}",
        "label": "key prod-main",
        "state": "firing",
        "transition": "fired",
        "fired_at": alert.fired_at.isoformat(),
        "resolved_at": None,
        "url": f"https://dash.example.com/alerts/{alert.pk}/",
    }
    assert body["summary"] == "Credits exhausted on key prod-main (HTTP 402)"
    assert "failed requests since" in body["detail"]
    assert body["fix"].startswith("Add credits at https://api.together.ai/settings/billing")
    assert request.headers["x-together-dash-event"] == "fired"
    assert request.headers["x-together-dash-delivery"] == str(Notification.objects.get().pk)
    assert request.headers["content-type"] == "application/json"

    assert verify(WEBHOOK_SECRET, request.headers, request.body)
    assert not verify("another-secret", request.headers, request.body)
    tampered = request.body.replace(b"prod-main", b"prod-xxxx")
    assert not verify(WEBHOOK_SECRET, request.headers, tampered)
    stale = time.time() + REPLAY_WINDOW + 60  # the same request replayed six minutes later
    assert not verify(WEBHOOK_SECRET, request.headers, request.body, now=stale)


def test_pagerduty_gets_trigger_then_resolve_with_the_same_dedup_key(
    django_capture_on_commit_callbacks: object, receiver: Receiver, key: TogetherKey
) -> None:
    pagerduty(receiver)
    record(django_capture_on_commit_callbacks, [payment_required(key.pk) for _ in range(3)])
    deliver_pending()
    record(django_capture_on_commit_callbacks, [success(key.pk)])
    deliver_pending()

    trigger, resolve = receiver.bodies()
    alert = Alert.objects.get()
    assert trigger["event_action"] == "trigger"
    assert resolve == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": f"together-dash-alert-{alert.pk}",
    }
    assert trigger["dedup_key"] == resolve["dedup_key"]
    assert trigger["routing_key"] == ROUTING_KEY
    payload = trigger["payload"]
    assert payload["summary"] == "Credits exhausted on key prod-main (HTTP 402)"
    assert (payload["severity"], payload["source"], payload["group"]) == (
        "critical",
        "dash.example.com",
        "billing",
    )
    assert payload["custom_details"]["fix"].startswith("Add credits")
    assert trigger["links"][0] == {
        "href": f"https://dash.example.com/alerts/{alert.pk}/",
        "text": "The alert in together-dash",
    }


def test_pagerduty_down_through_fire_and_resolve_gets_them_in_that_order(
    django_capture_on_commit_callbacks: object, receiver_down: Receiver, key: TogetherKey
) -> None:
    channel = pagerduty(receiver_down)
    record(django_capture_on_commit_callbacks, [payment_required(key.pk)])
    record(django_capture_on_commit_callbacks, [success(key.pk)])
    trigger, resolve = Notification.objects.filter(channel=channel).order_by("id")
    receiver_down.start()

    # The resolve's own task comes first (the trigger's is still backing off): it waits its turn.
    with pytest.raises(DeliveryError, match="earlier message"):
        deliver(resolve.pk)
    assert receiver_down.requests == []
    deliver_pending()

    assert [body["event_action"] for body in receiver_down.bodies()] == ["trigger", "resolve"]


def test_pagerduty_gets_no_reminders_while_the_others_do(
    inbox: Inbox, receivers: dict[str, Receiver], key: TogetherKey
) -> None:
    all_channels(receivers)
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        fire(key)
        deliver_pending()
    with time_machine.travel(start + timedelta(minutes=241), tick=False):
        evaluate_alerts_now()
        deliver_pending()

    assert len(receivers["pagerduty"].requests) == 1
    assert [r.json["alert"]["transition"] for r in receivers["webhook"].requests] == ["fired", "renotified"]
    assert len(receivers["slack"].requests) == 2
    assert len(inbox.messages) == 2


# ---- failures and retries ----------------------------------------------------------------------------


def test_one_dead_channel_holds_up_neither_email_nor_the_other_channels(
    inbox: Inbox, receivers: dict[str, Receiver], receiver_down: Receiver, rules: None
) -> None:
    dead = add_channel("webhook", receiver_down.url, secret=WEBHOOK_SECRET, name="dead")[0]
    webhook(receivers["webhook"])
    for name in ("poll_models", "poll_batches"):
        PollerHeartbeat.objects.create(
            name=name, interval_seconds=60, created_at=datetime.now(UTC) - timedelta(hours=1)
        )
    evaluate_alerts_now()
    deliver_pending()

    assert len(receivers["webhook"].requests) == 2
    assert len(inbox.messages) == 2
    assert set(Notification.objects.filter(channel=dead).values_list("status", flat=True)) == {"pending"}


def test_a_receiver_that_answers_500_is_retried_until_it_answers_2xx(
    receiver: Receiver, key: TogetherKey
) -> None:
    channel = webhook(receiver)
    receiver.answer_next(Answer(500, b"upstream hiccup"), Answer(404, b"no such hook"))
    fire(key)
    assert deliver_pending() == 0
    assert "HTTP 500 from http://127.0.0.1" in row_of(channel).last_error
    assert "upstream hiccup" in row_of(channel).last_error
    assert deliver_pending() == 0
    assert "HTTP 404" in row_of(channel).last_error
    assert deliver_pending() == 1

    assert len(receiver.requests) == 3
    assert row_of(channel).status == Notification.Status.SENT


def test_a_429_with_retry_after_holds_the_message_back_that_long(
    receiver: Receiver, key: TogetherKey
) -> None:
    channel = webhook(receiver)
    receiver.answer_next(Answer(429, b"slow down", (("Retry-After", "120"),)))
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        fire(key)
        with pytest.raises(DeliveryError) as raised:
            deliver(row_of(channel).pk)
        assert raised.value.retry_after == 120
        assert row_of(channel).not_before == start + timedelta(seconds=120)
    with time_machine.travel(start + timedelta(seconds=60), tick=False):
        assert deliver_pending() == 0
        assert not deliver(row_of(channel).pk)
    with time_machine.travel(start + timedelta(seconds=121), tick=False):
        assert deliver_pending() == 1

    assert len(receiver.requests) == 2


def test_a_redirect_is_not_followed(receiver: Receiver, key: TogetherKey) -> None:
    channel = webhook(receiver)
    receiver.answer_next(Answer(302, b"", (("Location", "http://169.254.169.254/latest/meta-data/"),)))
    fire(key)
    deliver_pending()

    assert len(receiver.requests) == 1
    assert "HTTP 302" in row_of(channel).last_error


def test_a_slack_url_and_the_secrets_never_show_in_errors_or_logs(
    receiver: Receiver, key: TogetherKey, caplog: pytest.LogCaptureFixture
) -> None:
    channel = slack(receiver)
    hook = pagerduty(receiver)
    receiver.answer_next(
        Answer(400, f"invalid_token {SLACK_PATH}".encode()), Answer(400, f"bad key {ROUTING_KEY}".encode())
    )
    fire(key)
    with caplog.at_level(logging.WARNING):
        deliver_pending()

    errors = " ".join(Notification.objects.values_list("last_error", flat=True))
    assert "HTTP 400" in row_of(channel).last_error and "HTTP 400" in row_of(hook).last_error
    for secret in ("sl4ckT0kenSecretPart", ROUTING_KEY):
        assert secret not in errors
        assert secret not in caplog.text
    stored = AlertChannel.objects.values_list("target_encrypted", "secret_encrypted", "target_hint")
    assert not any("sl4ckT0ken" in value or ROUTING_KEY in value for row in stored for value in row)


def test_a_message_carries_no_secret_even_when_the_alert_detail_holds_one(
    receivers: dict[str, Receiver], rules: None
) -> None:
    all_channels(receivers)
    leaked = "https://hooks.slack.com/services/T9/B9/leakedtokenvalue Bearer tgp_leakedtogetherkey1234"
    PollerHeartbeat.objects.create(
        name="poll_models",
        interval_seconds=60,
        created_at=datetime.now(UTC) - timedelta(hours=1),
        last_error=f"POST failed: {leaked} with {WEBHOOK_SECRET}",
    )
    evaluate_alerts_now()
    deliver_pending()

    sent = b" ".join(r.body for each in receivers.values() for r in each.requests)
    stored = " ".join(Notification.objects.values_list("body_text", flat=True))
    assert b"poller poll_models" in sent
    for secret in ("leakedtokenvalue", "tgp_leakedtogetherkey1234", WEBHOOK_SECRET, "sl4ckT0ken"):
        assert secret.encode() not in sent
        assert secret not in stored
    assert json.loads(receivers["pagerduty"].requests[0].body)["routing_key"] == ROUTING_KEY
    assert ROUTING_KEY not in stored  # added at send time only


# ---- which channels hear what ------------------------------------------------------------------------


def test_a_channel_hears_only_the_kinds_it_asked_for(receiver: Receiver, key: TogetherKey) -> None:
    webhook(receiver, kinds=[Kind.POLLER_STALE])
    fire(key)
    deliver_pending()

    assert receiver.requests == []
    assert not Notification.objects.filter(channel__isnull=False).exists()


def test_a_channel_disabled_after_the_message_was_written_skips_it(
    receiver: Receiver, key: TogetherKey
) -> None:
    channel = webhook(receiver)
    fire(key)
    AlertChannel.objects.update(enabled=False)
    deliver_pending()

    assert receiver.requests == []
    assert (row_of(channel).status, row_of(channel).last_error) == ("skipped", "channel disabled")
    Alert.objects.update(state=Alert.State.RESOLVED)
    fire(key)
    assert Notification.objects.filter(channel=channel).count() == 1  # a disabled channel gets no new rows


def test_an_email_channel_adds_its_addresses_to_the_email(
    inbox: Inbox, key: TogetherKey, rules: None
) -> None:
    add_channel("email", "cfo@example.com, Finance@Example.com", kinds=[Kind.BILLING])
    add_channel("email", "poller-people@example.com", kinds=[Kind.POLLER_STALE])
    fire(key)
    deliver_pending()

    assert inbox.envelopes[0][1] == ["billing-owner@example.com", "cfo@example.com", "finance@example.com"]


def test_without_email_recipients_the_channels_carry_it_and_no_skipped_email_is_written(
    receiver: Receiver, key: TogetherKey, settings: object
) -> None:
    settings.ALERT_EMAILS = []
    webhook(receiver)
    notification = fire(key)
    deliver_pending()

    assert notification.channel is not None
    assert Notification.objects.count() == 1
    assert len(receiver.requests) == 1


def test_a_channel_whose_secrets_cannot_be_decrypted_stops_nothing_else(
    inbox: Inbox, receivers: dict[str, Receiver], key: TogetherKey
) -> None:
    add_channel("email", "cfo@example.com")
    broken = webhook(receivers["webhook"])
    slack(receivers["slack"])
    AlertChannel.objects.filter(kind="email").update(target_encrypted="not-a-fernet-token")
    AlertChannel.objects.filter(pk=broken.pk).update(secret_encrypted="not-a-fernet-token")
    fire(key)
    deliver_pending()

    assert inbox.envelopes[0][1] == [BILLING_OWNER]
    assert len(receivers["slack"].requests) == 1
    assert receivers["webhook"].requests == []
    assert "cannot be decrypted with FIELD_ENCRYPTION_KEYS" in row_of(broken).last_error
