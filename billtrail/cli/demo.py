"""`billtrail demo`: build the demo world and say how to use it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from billtrail import bootstrap
from billtrail.cli import cli, user_errors
from billtrail.demo import SimulatedClock, build_world
from billtrail.settings import Settings
from ledger.errors import LedgerError


@cli.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/demo"),
    show_default=True,
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--no-serve", is_flag=True, help="build the world and exit")
@user_errors(LedgerError)
def demo(directory: Path, seed: int, port: int, no_serve: bool) -> None:
    """Build a realistic quarter of billing in DIR/billtrail.db, from scratch."""
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "billtrail.db"
    for stale in (db, db.with_name("billtrail.db-wal"), db.with_name("billtrail.db-shm")):
        stale.unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    env = {**os.environ, "BILLTRAIL_DATABASE_URL": url, "BILLTRAIL_VAR_DIR": str(directory)}
    env.pop("BILLTRAIL_SEAL_KEY", None)
    settings = Settings.from_env(env)
    clock = SimulatedClock(bootstrap.utc_now())
    started = time.monotonic()
    app = bootstrap.ledger(settings, clock=clock)
    try:
        report = build_world(app, clock, directory, seed, say=click.echo)
        checked = app.verify_seal().checked
    finally:
        app.close()
    click.echo(
        f"built in {time.monotonic() - started:.1f}s: {report.entities} entities, "
        f"{report.calls_written} calls with {report.duplicates_planted} duplicates planted, "
        f"{checked} events sealed"
    )
    for correction in report.corrections:
        click.echo(f"rate change: {correction}")
    click.echo("\nUse it with the other commands:")
    click.echo(f"  export BILLTRAIL_DATABASE_URL={url}")
    click.echo(f"  export BILLTRAIL_VAR_DIR={directory}")
    click.echo(
        "  billtrail entities list; billtrail history rate harbour-dental-group; billtrail verify"
    )
