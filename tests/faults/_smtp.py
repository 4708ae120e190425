"""SMTP servers that misbehave on purpose: one slow to accept a recipient, one that never speaks."""

from __future__ import annotations

import asyncio
import socket
import threading

from tests.alerts.conftest import Inbox, SmtpServer


class SlowToAccept(Inbox):
    """An inbox whose server holds every RCPT unanswered while `holding` is set: the client waits mid-send.

    Held at RCPT, the message itself has not been sent yet, so a client killed there cannot have delivered
    it: one email in the inbox afterwards means exactly once, not "once, by luck".
    """

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.holding.set()
        self.recipient_asked = threading.Event()

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: object, session: object, envelope: object, address: str, options: list[str]
    ) -> str:
        self.recipient_asked.set()
        while self.holding.is_set():
            await asyncio.sleep(0.05)
        envelope.rcpt_tos.append(address)  # type: ignore[attr-defined]
        return "250 OK"


def slow_smtp_server() -> SmtpServer:
    """A real aiosmtpd server on loopback that holds recipients until told to let go."""
    server = SmtpServer()
    server.inbox = SlowToAccept()
    return server


class SilentServer:
    """A TCP port that accepts connections and never says a word: an SMTP server hung, not down."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)  # the kernel completes the handshakes; nobody ever reads or writes
        self.port: int = self._socket.getsockname()[1]

    def close(self) -> None:
        self._socket.close()
