"""add_alert_channel, list_alert_channels, test_alert_channel, remove_alert_channel."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.test import override_settings

from tests.alerts.receivers import Receiver
from tests.alerts.test_channels import verify
from together_dash.alerts.models import AlertChannel, Notification

pytestmark = pytest.mark.django_db

SLACK_TOKEN_PATH = "/services/T0001/B0002/sl4ckT0kenSecretPart"


def run(*args: str, stdin: str | None = None) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    extra = {"stdin": io.StringIO(stdin)} if stdin is not None else {}
    call_command(*args, stdout=out, stderr=err, **extra)
    return out.getvalue(), err.getvalue()


def test_a_slack_url_is_read_from_stdin_stored_encrypted_and_shown_masked(receiver: Receiver) -> None:
    url = f"http://127.0.0.1:{receiver.port}{SLACK_TOKEN_PATH}"
    out, err = run("add_alert_channel", "slack", "-", "--name", "ops-slack", "--test", stdin=url + "\n")

    channel = AlertChannel.objects.get()
    assert (channel.name, channel.kind, channel.target) == ("ops-slack", "slack", url)
    assert "sl4ckT0ken" not in channel.target_encrypted + channel.target_hint
    assert channel.target_hint == f"http://127.0.0.1:{receiver.port}/…Part"
    assert "Test message delivered." in out
    assert "sl4ckT0ken" not in out + err
    (request,) = receiver.requests
    assert request.path == SLACK_TOKEN_PATH
    assert "Test message from together-dash" in request.json["text"]


def test_a_webhook_without_a_secret_gets_one_generated_and_shown_once(receiver: Receiver) -> None:
    out, _ = run("add_alert_channel", "webhook", receiver.url, "--kinds", "billing,key_invalid", "--test")

    secret = out.split("shown once (the receiver verifies signatures with it): ")[1].split()[0]
    channel = AlertChannel.objects.get()
    assert channel.secret == secret and len(secret) >= 32
    assert channel.kinds == ["billing", "key_invalid"]
    assert channel.name == "webhook-127.0.0.1"
    (request,) = receiver.requests
    assert request.headers["x-together-dash-event"] == "test"
    assert verify(secret, request.headers, request.body)
    assert request.json["alert"] is None


def test_pagerduty_takes_its_routing_key_from_the_environment_and_defaults_its_url(
    local_channels: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PD_ROUTING_KEY", "R0UT1NGKEY0123456789abcdefPDkey1")
    out, err = run("add_alert_channel", "pagerduty", "--secret-env", "PD_ROUTING_KEY")

    channel = AlertChannel.objects.get()
    assert channel.target == "https://events.pagerduty.com/v2/enqueue"
    assert channel.secret == "R0UT1NGKEY0123456789abcdefPDkey1"
    assert channel.secret_hint == "…key1"
    assert "R0UT1NGKEY" not in out + err + channel.secret_encrypted


def test_a_secret_on_the_command_line_works_with_a_warning(receiver: Receiver) -> None:
    _, err = run("add_alert_channel", "webhook", receiver.url, "--secret", "on-the-command-line-123")

    assert "shell history" in err
    assert AlertChannel.objects.get().secret == "on-the-command-line-123"


def test_a_secret_can_come_from_stdin(receiver: Receiver) -> None:
    run(
        "add_alert_channel", "pagerduty", receiver.url, "--secret", "-", stdin="routing-key-from-stdin-0001\n"
    )

    assert AlertChannel.objects.get().secret == "routing-key-from-stdin-0001"


def test_an_email_channel_takes_addresses(local_channels: None) -> None:
    run("add_alert_channel", "email", "cfo@example.com,ops@example.com", "--kinds", "billing")

    channel = AlertChannel.objects.get()
    assert (channel.target, channel.target_hint) == ("cfo@example.com, ops@example.com",) * 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("webhook", "https://169.254.169.254/latest", "--secret", "s3cret-s3cret"), "metadata"),
        (("slack", "https://[fe80::1]/hook"), "link-local"),
        (("webhook", "https://metadata.google.internal/", "--secret", "s3cret-s3cret"), "metadata service"),
        (("webhook", "https://hooks.example.com/x", "--kinds", "billing,nope"), "Unknown alert kinds: nope"),
        (("pagerduty",), "needs a routing key"),
        (("email", "not-an-address"), "valid email"),
        (("slack",), "target is required"),
    ],
)
def test_it_refuses_what_it_must(local_channels: None, args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("add_alert_channel", *args)
    assert not AlertChannel.objects.exists()


def test_plain_http_is_refused_without_debug_or_allow_local(settings: object) -> None:
    settings.DEBUG = settings.ALERT_CHANNEL_ALLOW_LOCAL = False
    with pytest.raises(CommandError, match="Only https"):
        run("add_alert_channel", "webhook", "http://hooks.example.com/alerts", "--secret", "s3cret-s3cret")


def test_a_test_message_that_cannot_be_delivered_says_why_and_the_channel_stays(
    receiver_down: Receiver,
) -> None:
    with pytest.raises(CommandError, match="Added, but the test message was not delivered: .*Connect"):
        run(
            "add_alert_channel",
            "webhook",
            receiver_down.url,
            "--secret",
            "-",
            "--test",
            stdin="s3cret-000001\n",
        )

    assert AlertChannel.objects.count() == 1
    assert Notification.objects.get().status == Notification.Status.PENDING  # the sweep will try again
    receiver_down.start()
    out, _ = run("test_alert_channel", "webhook-127.0.0.1")
    assert "Test message delivered" in out
    assert len(receiver_down.requests) == 1


def test_list_shows_every_channel_masked_and_remove_drops_one(receiver: Receiver) -> None:
    url = f"http://127.0.0.1:{receiver.port}{SLACK_TOKEN_PATH}"
    run("add_alert_channel", "slack", "-", "--name", "ops-slack", stdin=url)
    run("add_alert_channel", "pagerduty", receiver.url, "--secret", "-", stdin="routing-key-000000000abcd")

    out, _ = run("list_alert_channels")
    assert "ops-slack\tslack" in out and "pagerduty-127.0.0.1\tpagerduty" in out
    assert "secret …abcd" in out
    assert "sl4ckT0ken" not in out and "routing-key-0000" not in out

    out, _ = run("remove_alert_channel", "ops-slack")
    assert "Removed ops-slack" in out
    assert list(AlertChannel.objects.values_list("name", flat=True)) == ["pagerduty-127.0.0.1"]
    with pytest.raises(CommandError, match="No alert channel"):
        run("remove_alert_channel", "ops-slack")


def test_rotating_the_encryption_key_moves_the_channels_secrets_too(local_channels: None) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(FIELD_ENCRYPTION_KEYS=[old_key]):
        url = f"http://127.0.0.1:9{SLACK_TOKEN_PATH}"
        run("add_alert_channel", "slack", "-", "--name", "ops-slack", stdin=url)
        run("add_alert_channel", "pagerduty", "--secret", "-", stdin="routing-key-000000000abcd")
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key, old_key]):
        out, _ = run("rotate_encryption_key")
    assert "Re-encrypted 2 row(s)" in out
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key]):
        slack, pager = AlertChannel.objects.order_by("name")
        assert (slack.target, pager.secret) == (url, "routing-key-000000000abcd")
