"""The composition root: the only place that builds concrete pieces (the ledger
on its database, the seal key, the clock, later the Stripe client and the mailer)
from Settings and hands them out."""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from billtrail.settings import DatabaseURL, Settings, SettingsError
from ledger.app import Ledger
from ledger.application import utc_now

if TYPE_CHECKING:
    import stripe
    from flask import Flask

    from scheduler.mailer import SmtpMailer
    from scheduler.runner import Jobs, Schedule
    from scheduler.webhooks import WebhookSender

__all__ = [
    "Clock",
    "checkpoint_file",
    "close_web_app",
    "eventsourcing_env",
    "ledger",
    "mailer",
    "scheduler_jobs",
    "seal_key",
    "stripe_client",
    "utc_now",
    "web_app",
    "webhook_sender",
]

Clock = Callable[[], datetime]


def eventsourcing_env(db: DatabaseURL) -> dict[str, str]:
    """The eventsourcing library's settings for a database URL."""
    if db.backend == "sqlite":
        if db.path is None:
            raise SettingsError("BILLTRAIL_DATABASE_URL: no SQLite file path")
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(db.path),
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": db.dbname,
        "POSTGRES_HOST": db.host,
        "POSTGRES_PORT": str(db.port),
        "POSTGRES_USER": db.user,
        "POSTGRES_PASSWORD": db.password,
        "POSTGRES_SCHEMA": db.schema,
        # Waiting forever for the events table lock is never what an operator wants.
        "POSTGRES_LOCK_TIMEOUT": "10",
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "60",
    }


def seal_key(settings: Settings) -> bytes:
    """BILLTRAIL_SEAL_KEY, or in the embedded default a key file made once."""
    if settings.seal_key:
        return settings.seal_key
    path = settings.seal_key_file
    if path.exists():
        key = path.read_bytes().strip()
        if len(key) < 32:
            raise SettingsError(f"seal key file {path} holds fewer than 32 bytes")
        return key
    if settings.database.backend != "sqlite":
        raise SettingsError("BILLTRAIL_SEAL_KEY is required with PostgreSQL")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    sys.stderr.write(
        f"billtrail: warning: made a new seal key in {path}; keep it outside the database "
        "and back it up, or set BILLTRAIL_SEAL_KEY\n"
    )
    return key


def ledger(settings: Settings, clock: Clock = utc_now, *, projections: bool = False) -> Ledger:
    """The ledger on its database. With `projections`, in the embedded SQLite mode
    the read models catch up in process after every command (PostgreSQL runs
    `billtrail projections run` as its own process instead)."""
    db = settings.database
    if db.backend == "sqlite" and db.path is not None:
        db.path.parent.mkdir(parents=True, exist_ok=True)
    key = seal_key(settings)
    with _creating_tables(db):
        app = Ledger(eventsourcing_env(db), seal_key=key, clock=clock)
    if projections and db.backend == "sqlite":
        from projections.runner import Runner, attach

        attach(app, Runner(app))
    return app


@contextmanager
def _creating_tables(db: DatabaseURL) -> Iterator[None]:
    """On PostgreSQL, one process at a time creates (or checks) the ledger's tables:
    the library runs CREATE OR REPLACE FUNCTION on every start, and two processes
    starting together (a scheduler beside another, web workers) fail with "tuple
    concurrently updated". A session advisory lock on its own connection, per
    schema; it ends with the connection."""
    if db.backend != "postgres":
        yield
        return
    import psycopg

    digest = hashlib.sha256(f"billtrail-create-tables/{db.schema}".encode()).digest()
    with psycopg.connect(
        host=db.host,
        port=db.port,
        user=db.user,
        password=db.password or None,
        dbname=db.dbname,
        autocommit=True,
        connect_timeout=30,
    ) as conn:
        conn.execute(
            "SELECT pg_advisory_lock(%s)", (int.from_bytes(digest[:8], "big", signed=True),)
        )
        yield


def checkpoint_file(settings: Settings) -> Path:
    """Where `verify` keeps the seal head it last saw for this database, outside it."""
    digest = hashlib.sha256(settings.database_url.encode()).hexdigest()[:16]
    return settings.seal_key_file.parent / "seal-checkpoints" / f"{digest}.json"


def stripe_client(settings: Settings) -> stripe.StripeClient:
    """The Stripe client for STRIPE_API_KEY on STRIPE_API_BASE (unset: Stripe itself).
    Close it with `adapters.stripe.client.close_client`."""
    # Imported here: the SDK takes a while to import, and most commands never call Stripe.
    from adapters.stripe.client import make_client

    return make_client(settings.stripe_api_key, settings.stripe_api_base)


def mailer(settings: Settings) -> SmtpMailer | None:
    """The mailer for BILLTRAIL_SMTP_URL; None when it is not set (email notices then
    wait in the outbox). A URL it cannot use raises SettingsError naming it."""
    from scheduler.mailer import SmtpMailer, SmtpURL

    if settings.smtp_url is None:
        return None
    return SmtpMailer(SmtpURL.parse(settings.smtp_url))


def webhook_sender(settings: Settings) -> WebhookSender:
    """Customer webhooks, signed with secrets derived from BILLTRAIL_SECRET_KEY."""
    from scheduler.webhooks import WebhookSender

    return WebhookSender(settings.secret_key)


def scheduler_jobs(settings: Settings, clock: Clock = utc_now) -> Jobs:
    """The scheduler's jobs on a new ledger (close it with `jobs.ledger.close()`).
    The settings are checked before the database is opened."""
    from projections.invoices import InvoicesProjection
    from projections.runner import Runner
    from scheduler.outbox import Deliverer
    from scheduler.runner import Jobs, Schedule

    mail = mailer(settings)
    webhooks = webhook_sender(settings)
    app = ledger(settings, clock)
    try:
        projections = Runner(app, [InvoicesProjection()])
        schedule = Schedule(settings.timezone, sweep_at=settings.sweep_at)
        usage_push, reconcile = _stripe_jobs(settings, app, schedule)
        return Jobs(
            app,
            projections,
            Deliverer(app, mail, webhooks),
            schedule,
            settings.admin_emails,
            usage_push=usage_push,
            reconcile=reconcile,
        )
    except BaseException:
        app.close()
        raise


def _stripe_jobs(
    settings: Settings, app: Ledger, schedule: Schedule
) -> tuple[Callable[[], str], Callable[[], str]]:
    """The scheduler's daily Stripe jobs, each on a Stripe client of its own for the
    run (a client made once a day costs nothing; one kept open would need closing).
    The usage push runs under a source of its own per run: what it already pushed
    is known from the ledger's Stripe requests, not from the source. The reconcile
    runs under one source per day, so a second run the same day records once."""
    from ledger.sources import Source, SourceKind

    def push_usage_job() -> str:
        from adapters.stripe.client import close_client
        from adapters.stripe.outbound.outbox import Outbox
        from adapters.stripe.outbound.usage import push_usage

        run = f"usage-push/{app.clock().isoformat()}/{os.getpid()}"
        client = stripe_client(settings)
        try:
            report = push_usage(Outbox(app, client, Source(SourceKind.SCHEDULER_RUN, run)))
        finally:
            close_client(client)
        return (
            f"{len(report.pushed)} day(s) pushed, {report.up_to_date} up to date, "
            f"{len(report.refused)} refused, {len(report.no_customer)} without a customer"
        )

    def reconcile_job() -> str:
        from adapters.stripe.client import close_client
        from adapters.stripe.reconcile import reconcile

        day = app.clock().astimezone(schedule.timezone).date()
        client = stripe_client(settings)
        try:
            report = reconcile(
                app, Source(SourceKind.SCHEDULER_RUN, f"reconcile/{day}"), client=client
            )
        finally:
            close_client(client)
        return f"{len(report.figures)} invoice(s) checked, {len(report.findings)} finding(s)"

    return push_usage_job, reconcile_job


def web_app(settings: Settings | None = None, clock: Clock = utc_now) -> Flask:
    """The portal and API on the ledger of `settings` (default: the environment),
    with the read models caught up in process on SQLite. A factory for gunicorn:
    `gunicorn -w 2 'billtrail.bootstrap:web_app()'` builds one per worker. The app's
    ledger and Stripe client close with `close_web_app`."""
    from web import create_app

    settings = settings or Settings.from_env()
    app = ledger(settings, clock, projections=True)
    if settings.database.backend == "postgres":
        # The read models' tables, so that until `billtrail projections run` first
        # runs the pages show an empty (lagging) list rather than fail. SQLite's
        # in-process runner made them already.
        from projections.runner import Runner

        with _creating_tables(settings.database):
            Runner(app)
    return create_app(app, stripe_client(settings), settings, clock=clock)


def close_web_app(web: Flask) -> None:
    from adapters.stripe.client import close_client
    from web import services, shutdown

    shutdown(web)
    found: services.Services = web.extensions[services.KEY]
    if found.stripe is not None:
        close_client(found.stripe)
    found.ledger.close()
