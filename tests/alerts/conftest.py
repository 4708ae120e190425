"""Fixtures for the alert tests: a real SMTP server and HTTP receivers on loopback, Django pointed at them."""

from __future__ import annotations

import email
import socket
import threading
from collections.abc import Iterator
from email.message import Message

import pytest
from aiosmtpd.controller import Controller
from django.core.cache import cache

from tests.alerts.receivers import Receiver
from together_dash.alerts.models import AlertRule
from together_dash.keys.models import TogetherKey

BILLING_OWNER = "billing-owner@example.com"


class Inbox:
    """What the SMTP server accepted, parsed."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        self.messages.append(email.message_from_bytes(envelope.content))  # type: ignore[attr-defined]
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))  # type: ignore[attr-defined]
        self.arrived.set()
        return "250 Message accepted for delivery"

    @property
    def subjects(self) -> list[str]:
        return [str(message["Subject"]) for message in self.messages]

    def text(self, index: int = 0) -> str:
        return _part(self.messages[index], "text/plain")

    def html(self, index: int = 0) -> str:
        return _part(self.messages[index], "text/html")


def _part(message: Message, content_type: str) -> str:
    for part in message.walk():
        if part.get_content_type() == content_type:
            return part.get_payload(decode=True).decode()
    return ""


class SmtpServer:
    """An aiosmtpd server that a test can start late (SMTP down, then up) on a fixed port."""

    def __init__(self) -> None:
        # Bound but not listening: connections are refused (SMTP down), and no other process on the
        # machine can take the port before the server starts on it.
        self._reserved = socket.socket()
        self._reserved.bind(("127.0.0.1", 0))
        self.port: int = self._reserved.getsockname()[1]
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        self._reserved.close()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        self._reserved.close()
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def smtp_down(settings: object) -> Iterator[SmtpServer]:
    """Django's SMTP backend pointed at a loopback port where nothing listens yet."""
    server = SmtpServer()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 5
    settings.ALERT_EMAILS = [BILLING_OWNER]
    settings.SITE_ROOT = "https://dash.example.com"
    yield server
    server.stop()


@pytest.fixture
def smtp(smtp_down: SmtpServer) -> SmtpServer:
    """A running SMTP server on loopback that Django sends to."""
    smtp_down.start()
    return smtp_down


@pytest.fixture
def inbox(smtp: SmtpServer) -> Inbox:
    return smtp.inbox


@pytest.fixture
def rules(db: None) -> None:
    """The default rules: the data migration made them, but transactional tests flush every table."""
    AlertRule.ensure_defaults()


@pytest.fixture
def key(rules: None) -> TogetherKey:
    return TogetherKey.create("prod-main", "tk-test-secret-000000000000001")


# --- alert channels: real HTTP receivers on loopback (tests/alerts/receivers.py) ---------------------


@pytest.fixture
def local_channels(settings: object) -> None:
    """Channels may point at http://127.0.0.1 (as with DEBUG or ALERT_CHANNEL_ALLOW_LOCAL)."""
    settings.ALERT_CHANNEL_ALLOW_LOCAL = True
    settings.ALERT_CHANNEL_TIMEOUT = 5
    settings.SITE_ROOT = "https://dash.example.com"


@pytest.fixture
def receiver_down(local_channels: None) -> Iterator[Receiver]:
    """A receiver whose port refuses connections until the test calls start()."""
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def receiver(receiver_down: Receiver) -> Receiver:
    return receiver_down.start()


@pytest.fixture
def receivers(local_channels: None) -> Iterator[dict[str, Receiver]]:
    """One running receiver per channel kind: slack, webhook, pagerduty."""
    running = {kind: Receiver().start() for kind in ("slack", "webhook", "pagerduty")}
    yield running
    for each in running.values():
        each.stop()
