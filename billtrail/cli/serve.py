"""`billtrail serve`: the portal, the API and the Stripe webhook endpoint on the
development server (one process, threads). Production runs the same app under
gunicorn: see the README."""

from __future__ import annotations

import click

from billtrail import bootstrap
from billtrail.cli import cli, user_errors
from billtrail.settings import Settings
from ledger.errors import LedgerError


def serve_portal(settings: Settings, host: str, port: int) -> None:
    web = bootstrap.web_app(settings)
    try:
        web.run(host=host, port=port, threaded=True, use_reloader=False)
    finally:
        bootstrap.close_web_app(web)


@cli.command("serve")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@user_errors(LedgerError, OSError)
def serve(port: int, host: str) -> None:
    """Serve the portal on http://HOST:PORT (the development server)."""
    settings = Settings.from_env()
    click.echo(f"billtrail portal on http://{host}:{port}/  (Ctrl-C stops it)")
    serve_portal(settings, host, port)
