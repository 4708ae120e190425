"""Where a channel may send: https and public addresses only, never link-local or cloud metadata."""

from __future__ import annotations

import socket

import pytest
from django.core.exceptions import ValidationError

from tests.alerts.receivers import Receiver
from together_dash.alerts.models import AlertChannel, Notification
from together_dash.alerts.services import add_channel, send_test_message
from together_dash.alerts.targets import TargetError, check_url, pin


@pytest.fixture
def strict(settings: object) -> None:
    """Production: DEBUG off, ALERT_CHANNEL_ALLOW_LOCAL off."""
    settings.DEBUG = False
    settings.ALERT_CHANNEL_ALLOW_LOCAL = False


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/alerts", "Only https"),
        ("ftp://hooks.example.com/alerts", "must start with https"),
        ("https:///alerts", "no host"),
        ("https://user:pass@hooks.example.com/alerts", "credentials"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://169.254.10.1/", "link-local"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://[fd00:ec2::254]/", "metadata"),
        ("https://[::ffff:169.254.169.254]/", "metadata"),
        ("https://metadata.google.internal/computeMetadata/v1/", "metadata service"),
        ("https://METADATA.google.internal./", "metadata service"),
        ("https://0.0.0.0/hook", "not an address"),
        ("https://[::]/hook", "not an address"),
        ("https://127.0.0.1/hook", "loopback or private"),
        ("https://10.1.2.3/hook", "loopback or private"),
        ("https://[::1]/hook", "loopback or private"),
        ("https://localhost:8443/hook", "loopback or private"),
        ("https://hooks.example.com:notaport/", "cannot be parsed"),
    ],
)
def test_it_refuses_urls_it_must_never_send_to(strict: None, url: str, why: str) -> None:
    with pytest.raises(TargetError, match=why):
        check_url(url)


def test_a_public_https_url_is_fine(strict: None) -> None:
    check_url("https://hooks.slack.com/services/T000/B000/XXXX")
    check_url("https://93.184.215.14:8443/hook")


def test_with_debug_or_allow_local_http_and_loopback_are_fine_but_metadata_never(settings: object) -> None:
    settings.DEBUG, settings.ALERT_CHANNEL_ALLOW_LOCAL = False, True
    check_url("http://127.0.0.1:8080/hook")
    check_url("http://10.0.0.5/hook")
    settings.DEBUG, settings.ALERT_CHANNEL_ALLOW_LOCAL = True, False
    check_url("http://localhost:8080/hook")
    for url in ("http://169.254.169.254/", "http://[fe80::1]/", "http://metadata.google.internal/"):
        with pytest.raises(TargetError):
            check_url(url)


def test_the_resolved_address_is_checked_at_send_time(strict: None) -> None:
    """A name that passes when saved but resolves to a loopback address is refused when sent.

    "127.1" is no IP literal to Python (so it passes the save-time check as a name), but the system
    resolver reads it as 127.0.0.1, with no DNS: a real resolution, the same on every machine.
    """
    host = "127.1"
    check_url(f"https://{host}/hook")
    with pytest.raises(TargetError, match="loopback or private"):
        pin(f"https://{host}/hook")


def test_a_name_rebound_to_the_metadata_address_is_refused_at_send_time(
    strict: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the saved name now answers 169.254.169.254; we resolve, refuse and connect nowhere."""

    def rebound(host: str, port: int, *args: object, **kwargs: object) -> list:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    check_url("https://hooks.example.com/alerts")
    monkeypatch.setattr(socket, "getaddrinfo", rebound)  # DNS, the one part outside this machine
    with pytest.raises(TargetError, match="metadata"):
        pin("https://hooks.example.com/alerts")


def test_a_pinned_url_goes_to_the_checked_address_and_keeps_the_name(settings: object) -> None:
    settings.ALERT_CHANNEL_ALLOW_LOCAL = True
    pinned = pin("https://localhost:8443/hook?x=1")

    assert pinned.url in ("https://127.0.0.1:8443/hook?x=1", "https://[::1]:8443/hook?x=1")
    assert (pinned.host_header, pinned.tls_hostname) == ("localhost:8443", "localhost")


@pytest.mark.django_db
def test_the_model_and_the_service_refuse_a_bad_target(strict: None) -> None:
    for kind, target in [
        ("webhook", "http://hooks.example.com/x"),
        ("slack", "https://169.254.169.254/"),
        ("pagerduty", "https://metadata.google.internal/"),
        ("email", "not-an-address"),
    ]:
        with pytest.raises(ValidationError):
            add_channel(kind, target, secret="s3cret-routing-key-0000")
    assert not AlertChannel.objects.exists()


@pytest.mark.django_db
def test_a_stored_target_that_is_no_longer_allowed_is_refused_at_send_time(
    receiver: Receiver, settings: object
) -> None:
    channel = add_channel("webhook", receiver.url, secret="s3cret-0000000000")[0]
    settings.ALERT_CHANNEL_ALLOW_LOCAL = False
    settings.DEBUG = False
    with pytest.raises(Exception, match="Only https"):
        send_test_message(channel)

    assert receiver.requests == []
    assert "Only https" in Notification.objects.get().last_error
