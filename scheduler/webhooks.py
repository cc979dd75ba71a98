"""Customer webhooks: a JSON body POSTed to the entity's webhook URL, signed so the
customer can check it came from billtrail and was not replayed:

    Billtrail-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">

The key is the entity's webhook secret, `whsec_` followed by 64 hex digits, derived
from `BILLTRAIL_SECRET_KEY` and the entity id (`entity_webhook_secret`), so nothing
secret is stored in the ledger and each customer's key is its own. The operator
hands it over (`billtrail webhook-secret ENTITY`); changing BILLTRAIL_SECRET_KEY
changes every entity's secret. To verify, the customer recomputes the HMAC with its
secret over `t`, a dot and the raw body, compares it in constant time with `v1`, and
rejects a `t` more than a few minutes old. The body's `id` is the same on every
attempt: a customer that sees an `id` again has the notice already.

A 2xx answer is delivery. Anything else (another status, a redirect, which is not
followed, a refused connection, a timeout) fails the attempt and is retried."""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from ledger.notifications.application import Outcome

SIGNATURE_HEADER = "Billtrail-Signature"
TIMEOUT = 10.0
USER_AGENT = "billtrail-webhooks/1"


def entity_webhook_secret(secret_key: str, entity_id: str) -> str:
    digest = hmac.new(
        secret_key.encode(), f"billtrail webhook secret v1:{entity_id}".encode(), hashlib.sha256
    ).hexdigest()
    return f"whsec_{digest}"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is an answer like any other non-2xx: the attempt failed


class WebhookSender:
    def __init__(
        self,
        secret_key: str | None,
        timeout: float = TIMEOUT,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.secret_key = secret_key
        self.timeout = timeout
        self.now = now
        self.opener = urllib.request.build_opener(_NoRedirects())

    def send(self, url: str, entity_id: str, body: bytes, delivery_id: str) -> Outcome:
        """POST `body` to `url`, signed with the entity's secret; never raises for a
        delivery problem."""
        if not self.secret_key:
            return Outcome(False, "BILLTRAIL_SECRET_KEY is not set: webhooks cannot be signed")
        secret = entity_webhook_secret(self.secret_key, entity_id)
        if not url.startswith(("https://", "http://")):
            return Outcome(False, f"not an http(s) URL: {url!r}", permanent=True)
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "Billtrail-Notification-Id": delivery_id,
                SIGNATURE_HEADER: signature(secret, int(self.now()), body),
            },
        )
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return Outcome(False, f"HTTP {exc.code} {exc.reason}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return Outcome(False, f"{type(exc).__name__}: {exc}")
        if not 200 <= status < 300:
            return Outcome(False, f"HTTP {status}")
        return Outcome(True, f"HTTP {status}")
