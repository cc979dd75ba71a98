"""What the scheduler reads from its settings (the SMTP URL, admins, the sweep's
local time), which day a starting scheduler still owes a sweep for, the retry
schedule, and the webhook signature a customer checks."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from billtrail.settings import Settings, SettingsError
from ledger.notifications.domain import RetryPolicy
from scheduler.mailer import SmtpURL
from scheduler.sweep import missed_sweep_day
from scheduler.webhooks import entity_webhook_secret, signature


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "smtp://mail.example.com",
            SmtpURL(False, "mail.example.com", 25, "", "", False, "billtrail@localhost"),
        ),
        (
            "smtp://bt%40example.com:p%3Ass%40w@mail.example.com:587?starttls=1",
            SmtpURL(
                False, "mail.example.com", 587, "bt@example.com", "p:ss@w", True, "bt@example.com"
            ),
        ),
        (
            "smtps://user:pw@mail.example.com?from=billing@example.com",
            SmtpURL(True, "mail.example.com", 465, "user", "pw", False, "billing@example.com"),
        ),
    ],
)
def test_smtp_urls_are_read_with_their_defaults(url: str, expected: SmtpURL) -> None:
    assert SmtpURL.parse(url) == expected


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("nonsense", "expected smtp://"),
        ("http://mail.example.com", "expected smtp://"),
        ("smtp://", "no host"),
        ("smtp://user:secret@mail.example.com:99999", "port is not a number"),
        # An unencoded "/" ends the host part early; the message still hides the rest.
        ("smtp://user:se/cret@mail.example.com", "port is not a number"),
        ("smtp://mail.example.com/path", "no path"),
        ("smtp://mail.example.com?tls=1", "unknown option 'tls'"),
        ("smtp://mail.example.com?starttls=maybe", "starttls must be 1 or 0"),
        ("smtps://mail.example.com?starttls=1", "smtps is TLS already"),
        ("smtp://mail.example.com?from=nobody", "from must be an email address"),
    ],
)
def test_an_unusable_smtp_url_is_refused_naming_the_setting_never_the_password(
    url: str, why: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        SmtpURL.parse(url)
    message = str(caught.value)
    assert message.startswith("BILLTRAIL_SMTP_URL: ")
    assert why in message
    assert "secret" not in message
    assert "cret" not in message


def test_admin_emails_and_the_sweep_time_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {"BILLTRAIL_ADMIN_EMAILS": " a@x.test, b@x.test ", "BILLTRAIL_SWEEP_AT": "07:30"}
    )
    assert settings.admin_emails == ("a@x.test", "b@x.test")
    assert settings.sweep_at == time(7, 30)
    defaults = Settings.from_env({})
    assert (defaults.admin_emails, defaults.sweep_at) == ((), time(6, 0))


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"BILLTRAIL_ADMIN_EMAILS": "a@x.test;b@x.test"}, "BILLTRAIL_ADMIN_EMAILS: not an email"),
        ({"BILLTRAIL_SWEEP_AT": "6am"}, "BILLTRAIL_SWEEP_AT: expected a local time"),
        ({"BILLTRAIL_SWEEP_AT": "06:00+01:00"}, "BILLTRAIL_SWEEP_AT: expected a local time"),
    ],
)
def test_bad_scheduler_settings_are_refused(env: dict[str, str], why: str) -> None:
    with pytest.raises(SettingsError, match=why):
        Settings.from_env(env)


PARIS = ZoneInfo("Europe/Paris")
SIX = time(6, 0)


@pytest.mark.parametrize(
    ("last", "now", "owed"),
    [
        (None, datetime(2026, 2, 20, 10, 0, tzinfo=PARIS), date(2026, 2, 20)),
        (None, datetime(2026, 2, 20, 5, 0, tzinfo=PARIS), date(2026, 2, 19)),
        (date(2026, 2, 20), datetime(2026, 2, 20, 10, 0, tzinfo=PARIS), None),
        (date(2026, 2, 19), datetime(2026, 2, 20, 5, 59, tzinfo=PARIS), None),
        (date(2026, 2, 19), datetime(2026, 2, 20, 6, 0, tzinfo=PARIS), date(2026, 2, 20)),
        (date(2026, 2, 10), datetime(2026, 2, 20, 10, 0, tzinfo=PARIS), date(2026, 2, 20)),
        # A sweep by hand for a later day (sweep past-due --today) owes nothing.
        (date(2026, 2, 25), datetime(2026, 2, 20, 10, 0, tzinfo=PARIS), None),
    ],
)
def test_a_starting_scheduler_owes_the_sweep_of_the_latest_scheduled_day(
    last: date | None, now: datetime, owed: date | None
) -> None:
    assert missed_sweep_day(last, now, SIX) == owed


def test_retries_back_off_exponentially_up_to_a_cap() -> None:
    policy = RetryPolicy()
    delays = [policy.delay(n) for n in range(1, policy.max_attempts)]
    assert delays[:4] == [timedelta(minutes=m) for m in (1, 2, 4, 8)]
    assert delays[-1] == timedelta(minutes=256)
    assert RetryPolicy(max_delay=timedelta(minutes=5)).delay(9) == timedelta(minutes=5)


def test_the_webhook_signature_is_the_documented_hmac() -> None:
    secret = entity_webhook_secret("k" * 40, "acme")
    assert secret.startswith("whsec_")
    assert secret != entity_webhook_secret("k" * 40, "other")
    body = b'{"id":"x"}'
    expected = hmac.new(secret.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(secret, 1_700_000_000, body) == f"t=1700000000,v1={expected}"
