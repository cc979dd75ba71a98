"""Email through `BILLTRAIL_SMTP_URL`:

    smtp://[user:password@]host[:port][?starttls=1][&from=billing@example.com]
    smtps://[user:password@]host[:port][?from=billing@example.com]

`smtp` defaults to port 25 (plain, or upgraded with STARTTLS when `starttls=1`),
`smtps` to 465 (TLS from the first byte). Certificates are verified against the
system's CAs (`SSL_CERT_FILE` names another bundle). The user and password, when
given, log in (percent-encode `@`, `:` and `/` in them). `from` is the sender
address; without it, the user when it is an address, else `billtrail@localhost`.

One message per connection: notices are few (a handful per past-due invoice) and a
connection that broke mid-batch would otherwise leave it unclear which of them went
out. The server's reply to DATA (usually with its queue id) is the detail recorded
in the ledger as proof the message was accepted."""

from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from urllib.parse import parse_qs, unquote, urlsplit

from billtrail.settings import SettingsError
from ledger.notifications.application import Outcome

_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
TIMEOUT = 30.0


@dataclass(frozen=True)
class SmtpURL:
    tls: bool  # smtps: TLS from the first byte
    host: str
    port: int
    user: str
    password: str
    starttls: bool
    sender: str

    @classmethod
    def parse(cls, url: str) -> SmtpURL:
        shown = _redacted(url)

        def bad(why: str) -> SettingsError:
            return SettingsError(f"BILLTRAIL_SMTP_URL: {why}, got {shown!r}")

        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise bad("expected smtp://[user:password@]host[:port] or smtps://...")
        if not parts.hostname:
            raise bad("no host")
        try:
            port = parts.port
        except ValueError:
            raise bad("the port is not a number from 1 to 65535") from None
        if parts.path not in ("", "/") or parts.fragment:
            raise bad("no path or fragment is allowed")
        try:
            query = parse_qs(parts.query, strict_parsing=bool(parts.query))
        except ValueError:
            raise bad("the query is not name=value pairs") from None
        unknown = set(query) - {"starttls", "from"}
        if unknown:
            raise bad(f"unknown option {sorted(unknown)[0]!r} (known: starttls, from)")
        starttls_text = query.get("starttls", ["0"])[-1].lower()
        if starttls_text not in _TRUE | _FALSE:
            raise bad("starttls must be 1 or 0")
        starttls = starttls_text in _TRUE
        tls = parts.scheme == "smtps"
        if tls and starttls:
            raise bad("smtps is TLS already; starttls is for smtp://")
        user = unquote(parts.username or "")
        password = unquote(parts.password or "")
        if password and not user:
            raise bad("a password needs a user")
        sender = query.get("from", [""])[-1] or (user if _ADDRESS.match(user) else "")
        sender = sender or "billtrail@localhost"
        if not _ADDRESS.match(sender):
            raise bad(f"from must be an email address, not {sender!r}")
        return cls(
            tls=tls,
            host=parts.hostname,
            port=port or (465 if tls else 25),
            user=user,
            password=password,
            starttls=starttls,
            sender=sender,
        )


def _redacted(url: str) -> str:
    """The URL as it may be shown in an error: never the password (up to the last
    `@`, so a password with an unencoded `/` or `@` is hidden too; hiding a little
    more than the password is the safe mistake)."""
    return re.sub(r"(//[^/@:]*:).*@", r"\1***@", url)


class SmtpMailer:
    def __init__(self, url: SmtpURL, timeout: float = TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout

    @property
    def sender(self) -> str:
        return self.url.sender

    def _connect(self) -> smtplib.SMTP:
        u = self.url
        if u.tls:
            return smtplib.SMTP_SSL(
                u.host, u.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        smtp = smtplib.SMTP(u.host, u.port, timeout=self.timeout)
        if u.starttls:
            try:
                smtp.starttls(context=ssl.create_default_context())
            except BaseException:
                smtp.close()
                raise
        return smtp

    def send(self, message: EmailMessage) -> Outcome:
        """Deliver one message to the server; never raises for a delivery problem.
        A 5xx reply to the recipient or to the message is permanent (retrying
        cannot help); anything else (4xx, a refused login or sender, which an
        operator can fix, a refused or broken connection, a timeout) is worth
        another attempt."""
        recipient = str(message["To"])
        try:
            with self._connect() as smtp:
                if self.url.user:
                    smtp.login(self.url.user, self.url.password)
                code, reply = smtp.mail(self.sender)
                if code != 250:
                    return _refused("MAIL FROM", code, reply, final=False)
                code, reply = smtp.rcpt(recipient)
                if code not in (250, 251):
                    return _refused("RCPT TO", code, reply)
                code, reply = smtp.data(message.as_bytes(policy=SMTP_POLICY))
                if code != 250:
                    return _refused("DATA", code, reply)
                return Outcome(True, f"{code} {_text(reply)}")
        except smtplib.SMTPDataError as exc:
            return _refused("DATA", exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPResponseException as exc:
            return _refused("", exc.smtp_code, exc.smtp_error, final=False)
        except (smtplib.SMTPException, OSError) as exc:
            return Outcome(False, f"{type(exc).__name__}: {exc}".rstrip(": "))


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _refused(step: str, code: int, reply: bytes | str, *, final: bool = True) -> Outcome:
    detail = f"{code} {_text(reply)}"
    return Outcome(
        False, f"{step}: {detail}" if step else detail, permanent=final and 500 <= code < 600
    )
