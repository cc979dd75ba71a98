"""Settings: one frozen object read from the environment, with working defaults
for the embedded (SQLite, one box) mode. Reading settings never touches the disk or
the network; `bootstrap` turns them into concrete pieces."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_VAR_DIR = Path("var")
SANDBOX_API_KEY = "sk_test_billtrail_sandbox"
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")


class SettingsError(ValueError):
    """A setting has a value billtrail cannot use; the message names it."""


@dataclass(frozen=True)
class DatabaseURL:
    """`sqlite:///path/to/file.db` or `postgresql://user[:password]@host[:port]/db[?schema=S]`."""

    backend: str
    path: Path | None = None
    user: str = ""
    password: str = ""
    host: str = ""
    port: int = 5432
    dbname: str = ""
    schema: str = "public"

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        parts = urlsplit(url)
        if parts.scheme == "sqlite":
            # sqlite:///relative/path.db and sqlite:////absolute/path.db, as SQLAlchemy spells them.
            raw = unquote(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else ""
            if parts.query or parts.fragment:
                raise SettingsError(
                    f"BILLTRAIL_DATABASE_URL: a sqlite URL takes no options, got {url!r}"
                )
            if not raw:
                raise SettingsError(f"BILLTRAIL_DATABASE_URL: no file path in {url!r}")
            return cls(backend="sqlite", path=Path(raw))
        if parts.scheme in ("postgresql", "postgres"):
            dbname = parts.path.lstrip("/")
            if not parts.hostname or not dbname:
                raise SettingsError(
                    f"BILLTRAIL_DATABASE_URL: expected postgresql://user@host:port/db, got {url!r}"
                )
            try:
                port = parts.port or 5432
            except ValueError as exc:
                raise SettingsError(f"BILLTRAIL_DATABASE_URL: bad port in {url!r}") from exc
            schema = parse_qs(parts.query).get("schema", ["public"])[0]
            return cls(
                backend="postgres",
                user=unquote(parts.username or "postgres"),
                password=unquote(parts.password or ""),
                host=parts.hostname,
                port=port,
                dbname=dbname,
                schema=schema,
            )
        raise SettingsError(
            f"BILLTRAIL_DATABASE_URL must start with sqlite:/// or postgresql://, got {url!r}"
        )


@dataclass(frozen=True)
class Settings:
    database_url: str
    database: DatabaseURL
    var_dir: Path
    secret_key: str | None
    seal_key: bytes | None
    seal_key_file: Path
    timezone: ZoneInfo
    stripe_api_key: str
    stripe_api_base: str | None
    stripe_webhook_secrets: tuple[str, ...]
    smtp_url: str | None
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Who is emailed of every invoice that becomes past due (until the portal's
    # users with the admin role take this over).
    admin_emails: tuple[str, ...] = ()
    # The local time (in `timezone`) of the daily past-due sweep.
    sweep_at: time = time(6, 0)
    # Session cookies only over HTTPS. Browsers accept them from http://localhost
    # and 127.0.0.1 too, so only a plain-HTTP deployment elsewhere turns this off.
    secure_cookies: bool = True

    @property
    def stripe_dashboard(self) -> str:
        """Where an invoice's page in the Stripe dashboard lives (test or live mode)."""
        test = self.stripe_api_key.startswith(("sk_test_", "rk_test_"))
        return "https://dashboard.stripe.com/test" if test else "https://dashboard.stripe.com"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        var_dir = Path(env.get("BILLTRAIL_VAR_DIR") or DEFAULT_VAR_DIR)
        database_url = env.get("BILLTRAIL_DATABASE_URL") or f"sqlite:///{var_dir / 'billtrail.db'}"
        tz_name = env.get("BILLTRAIL_TIMEZONE") or "UTC"
        try:
            timezone = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SettingsError(f"BILLTRAIL_TIMEZONE: unknown time zone {tz_name!r}") from exc
        seal = env.get("BILLTRAIL_SEAL_KEY")
        if seal is not None and seal and len(seal.encode()) < 32:
            raise SettingsError("BILLTRAIL_SEAL_KEY must be at least 32 bytes")
        secrets = tuple(
            s.strip() for s in (env.get("STRIPE_WEBHOOK_SECRET") or "").split(",") if s.strip()
        )
        admin_emails = tuple(
            a.strip() for a in (env.get("BILLTRAIL_ADMIN_EMAILS") or "").split(",") if a.strip()
        )
        for address in admin_emails:
            if not _EMAIL.fullmatch(address):
                raise SettingsError(f"BILLTRAIL_ADMIN_EMAILS: not an email address: {address!r}")
        sweep_text = env.get("BILLTRAIL_SWEEP_AT") or "06:00"
        try:
            sweep_at = time.fromisoformat(sweep_text)
            if sweep_at.tzinfo is not None:
                raise ValueError("the zone is BILLTRAIL_TIMEZONE's")
        except ValueError:
            raise SettingsError(
                f"BILLTRAIL_SWEEP_AT: expected a local time like 06:00, got {sweep_text!r}"
            ) from None
        secure_text = (env.get("BILLTRAIL_SECURE_COOKIES") or "true").strip().lower()
        if secure_text not in _BOOLEANS:
            raise SettingsError(
                f"BILLTRAIL_SECURE_COOKIES: expected true or false, got {secure_text!r}"
            )
        return cls(
            database_url=database_url,
            database=DatabaseURL.parse(database_url),
            var_dir=var_dir,
            secret_key=env.get("BILLTRAIL_SECRET_KEY") or None,
            seal_key=seal.encode() if seal else None,
            seal_key_file=var_dir / "seal.key",
            timezone=timezone,
            stripe_api_key=env.get("STRIPE_API_KEY") or SANDBOX_API_KEY,
            stripe_api_base=env.get("STRIPE_API_BASE") or None,
            stripe_webhook_secrets=secrets,
            smtp_url=env.get("BILLTRAIL_SMTP_URL") or None,
            env=env,
            admin_emails=admin_emails,
            sweep_at=sweep_at,
            secure_cookies=_BOOLEANS[secure_text],
        )
