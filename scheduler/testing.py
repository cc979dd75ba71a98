"""Test support for the scheduler (its tests and the whole-system simulation): a
real aiosmtpd SMTP server on a loopback port that requires a login, records every
message it accepts and can be told to refuse them (an outage). aiosmtpd is a
development dependency: only tests import this module."""

from __future__ import annotations

import asyncio
import email
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

SMTP_USER, SMTP_PASSWORD = "billtrail", "s3cret:pass@word"


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: Message

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def body(self) -> str:
        part = self.message.get_payload(decode=True)
        assert isinstance(part, bytes)
        return part.decode()


class SmtpHandler:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refuse: str | None = None  # e.g. "451 4.3.0 try again later"
        self.lock = threading.Lock()

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return self.refuse
        message = email.message_from_bytes(envelope.content)
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
            n = len(self.received)
        return f"250 2.0.0 Ok: queued as Q{n}"

    def message_ids(self) -> list[str]:
        with self.lock:
            return [r.message_id for r in self.received]


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    # handled=False: aiosmtpd answers 535 itself (with the default it would stay silent).
    return AuthResult(success=ok, handled=False)


class LoopbackController(Controller):
    """aiosmtpd's controller on a socket bound beforehand to a free loopback port,
    so parallel tests never race for a port number."""

    def __init__(self, handler: SmtpHandler, **kwargs: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        super().__init__(
            handler,
            hostname="127.0.0.1",
            port=port,
            loop=asyncio.new_event_loop(),
            authenticator=_authenticate,
            auth_require_tls=False,
            **kwargs,
        )

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self.sock, ssl=self.ssl_context)


@dataclass
class SmtpServer:
    handler: SmtpHandler
    url: str

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def refuse(self) -> str | None:
        return self.handler.refuse

    @refuse.setter
    def refuse(self, reply: str | None) -> None:
        self.handler.refuse = reply


@contextmanager
def smtp_server(handler: SmtpHandler, scheme: str = "smtp", **kwargs: Any) -> Iterator[SmtpServer]:
    """The server running until the block ends; `url` is a BILLTRAIL_SMTP_URL for it
    (with the login it requires and billing@billtrail.test as sender)."""
    controller = LoopbackController(handler, **kwargs)
    controller.start()
    try:
        user, password = quote(SMTP_USER, safe=""), quote(SMTP_PASSWORD, safe="")
        url = (
            f"{scheme}://{user}:{password}@127.0.0.1:{controller.port}?from=billing@billtrail.test"
        )
        yield SmtpServer(handler, url)
    finally:
        controller.stop()
        controller.loop.close()
