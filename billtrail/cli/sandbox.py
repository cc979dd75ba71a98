"""`billtrail stripe-sandbox`: the offline Stripe."""

from __future__ import annotations

import click

from billtrail.cli import cli


@cli.command("stripe-sandbox")
@click.option("--port", type=click.IntRange(0, 65535), default=12111, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--state", "state_file", type=click.Path(dir_okay=False), default=None)
def stripe_sandbox(port: int, host: str, state_file: str | None) -> None:
    """Run the offline Stripe sandbox (the API subset billtrail uses)."""
    from adapters.stripe.sandbox.server import serve_forever

    serve_forever(host=host, port=port, state_file=state_file)
