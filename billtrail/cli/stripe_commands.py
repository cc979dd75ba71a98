"""The outbound Stripe commands: `stripe push`, `usage push`, `corrections ...`
and `reconcile`. Each run is a source of its own (`cli:<command>/<run id>` by the
operator's login name), recorded on everything it changes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from billtrail import bootstrap
from billtrail.cli import EXIT_PROBLEM, UsageFailure, cli, user_errors
from billtrail.cli.ledger_commands import cli_source, emit_json, parse_date
from billtrail.settings import Settings
from ledger.errors import LedgerError
from ledger.money import parse_decimal

if TYPE_CHECKING:
    from adapters.stripe.outbound.corrections import CorrectionResult
    from adapters.stripe.outbound.outbox import Outbox


@contextmanager
def outbox_for(command: str) -> Iterator[Outbox]:
    """An outbox on the ledger and the Stripe client the settings name. Stripe not
    answering (or refusing the key) is one line and exit 2, as for `sync`; running
    the command again resumes where it stopped."""
    # Imported here: the SDK is slow to import and most commands never call Stripe.
    import stripe

    from adapters.stripe.client import close_client
    from adapters.stripe.outbound.outbox import Outbox, StripeUnavailable

    settings = Settings.from_env()
    app = bootstrap.ledger(settings, projections=True)
    client = bootstrap.stripe_client(settings)
    try:
        yield Outbox(app, client, cli_source(command))
    except StripeUnavailable as exc:
        raise UsageFailure(str(exc)) from exc
    except stripe.StripeError as exc:
        raise UsageFailure(f"Stripe answered: {exc.user_message or exc}; run it again") from exc
    finally:
        close_client(client)
        app.close()


def _outbound_errors() -> tuple[type[BaseException], ...]:
    from adapters.stripe.outbound.catalog import NotSetUp
    from adapters.stripe.outbound.outbox import StripeRefused

    return (LedgerError, StripeRefused, NotSetUp)


# stripe push ---------------------------------------------------------------------------


@cli.group("stripe")
def stripe_group() -> None:
    """What billtrail keeps in Stripe."""


@stripe_group.command("push")
@click.option(
    "--send-invoice",
    "send_invoice",
    multiple=True,
    metavar="ENTITY",
    help="Bill ENTITY by sending its invoices (paid by transfer) instead of charging it.",
)
@click.option("--days-until-due", type=click.IntRange(1, 365), default=30, show_default=True)
@user_errors(LedgerError)
def stripe_push(send_invoice: tuple[str, ...], days_until_due: int) -> None:
    """Push every entity's customer, its prices (one per rate version and fixed fee)
    and its subscription, and the meter for calls. Only what is missing is sent."""
    from adapters.stripe.outbound.push import push_all
    from adapters.stripe.outbound.subscriptions import CHARGE_AUTOMATICALLY, BillingTerms

    transfer = BillingTerms("send_invoice", days_until_due)
    with _failures(), outbox_for("stripe-push") as outbox:
        for entity_id in send_invoice:
            outbox.ledger.entity(entity_id)  # an unknown entity is the user's mistake
        report = push_all(
            outbox,
            terms=lambda e: transfer if e.entity_id in send_invoice else CHARGE_AUTOMATICALLY,
        )
    for entity_id, why in sorted(report.subscriptions.skipped.items()):
        click.echo(f"{entity_id}: no subscription: {why}", err=True)
    s = report.summary()
    click.echo(
        f"pushed {s['customers']} customers, {s['prices']} prices, "
        f"{s['subscriptions']} subscriptions ({s['skipped']} entities not ready)"
    )


# usage push ----------------------------------------------------------------------------


@cli.group("usage")
def usage_group() -> None:
    """Usage (calls handled per entity and day) and Stripe's meter."""


@usage_group.command("push")
@click.option("--date", "day", default=None, metavar="DATE", help="push this day only")
@click.option("--json", "as_json", is_flag=True, help="last line: the summary as JSON")
@user_errors(LedgerError)
def usage_push(day: str | None, as_json: bool) -> None:
    """Push each entity's calls per day to Stripe's meter: a day once it is over in
    the entity's time zone (default: the last 34 days), then corrections for calls
    counted later. Exit 1 when Stripe refused a day."""
    from adapters.stripe.outbound.usage import push_usage

    days = [parse_date(day, "--date")] if day is not None else None
    with _failures(), outbox_for("usage-push") as outbox:
        report = push_usage(outbox, days=days)
    for entity_id, refused_day, why in report.refused:
        click.echo(f"{entity_id} {refused_day}: {why}", err=True)
    for entity_id, later in report.not_over:
        click.echo(f"{entity_id} {later}: not over yet in its time zone; not pushed", err=True)
    for entity_id in report.no_customer:
        click.echo(f"{entity_id}: no Stripe customer yet (run `billtrail stripe push`)", err=True)
    corrections = sum(1 for p in report.pushed if p.correction)
    calls = sum(p.quantity for p in report.pushed)
    summary = {
        "pushed": len(report.pushed),
        "corrections": corrections,
        "calls": calls,
        "up_to_date": report.up_to_date,
        "refused": len(report.refused),
    }
    click.echo(
        f"pushed {summary['pushed']} days ({corrections} corrections, {calls} calls); "
        f"{report.up_to_date} already up to date; {len(report.refused)} refused"
    )
    if as_json:
        emit_json(summary)
    if report.refused:
        sys.exit(EXIT_PROBLEM)


# corrections ---------------------------------------------------------------------------

reason_option = click.option("--reason", required=True, help="why (kept with the correction)")
actor_option = click.option(
    "--actor", default=None, help="who decides it (default: your login name)"
)


def _actor(actor: str | None, command: str) -> str:
    return actor or cli_source(command).actor or "operator"


def _show(result: CorrectionResult) -> None:
    done = "already done" if result.already_done else "done"
    details = ", ".join(f"{k} {v}" for k, v in sorted(result.results.items()))
    click.echo(f"correction {result.correction_id}: {done}: {details}")


@cli.group("corrections")
def corrections_group() -> None:
    """An admin's corrections of an invoice; each needs a reason and names its actor."""


@corrections_group.command("wrong-rate")
@click.argument("invoice")
@click.option("--per-call", "per_call", default=None, help="the corrected price per call")
@click.option("--effective-from", "effective_from", default=None, help="date it applies from")
@reason_option
@actor_option
@user_errors()
def wrong_rate(
    invoice: str,
    per_call: str | None,
    effective_from: str | None,
    reason: str,
    actor: str | None,
) -> None:
    """Revise the rate (with --per-call and --effective-from), void INVOICE and
    replace it with one regenerated from the ledger's calls at the rates now in
    force."""
    from adapters.stripe.outbound.corrections import RateRevision, correct_wrong_rate

    if (per_call is None) != (effective_from is None):
        raise UsageFailure("--per-call and --effective-from go together")
    revision = None
    with _failures():
        if per_call is not None and effective_from is not None:
            revision = RateRevision(
                parse_decimal(per_call, "--per-call"),
                parse_date(effective_from, "--effective-from"),
            )
        with outbox_for("corrections") as outbox:
            result = correct_wrong_rate(
                outbox,
                invoice,
                reason=reason,
                actor=_actor(actor, "corrections"),
                revision=revision,
            )
    _show(result)


@corrections_group.command("duplicate-calls")
@click.argument("invoice")
@click.option("--call", "calls", multiple=True, metavar="CALL_ID", help="a duplicate call id")
@click.option(
    "--calls-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="a file of duplicate call ids, one per line",
)
@reason_option
@actor_option
@user_errors()
def duplicate_calls(
    invoice: str,
    calls: tuple[str, ...],
    calls_file: Path | None,
    reason: str,
    actor: str | None,
) -> None:
    """Credit INVOICE for calls counted twice, the call ids as evidence."""
    from adapters.stripe.outbound.corrections import credit_duplicate_calls

    ids = list(calls)
    if calls_file is not None:
        try:
            ids += [line.strip() for line in calls_file.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageFailure(f"{calls_file}: cannot read it ({exc})") from None
    with _failures(), outbox_for("corrections") as outbox:
        result = credit_duplicate_calls(
            outbox, invoice, ids, reason=reason, actor=_actor(actor, "corrections")
        )
    _show(result)


@corrections_group.command("credit")
@click.argument("invoice")
@click.option("--amount", required=True, help="in the invoice's currency, e.g. 12.50")
@reason_option
@actor_option
@user_errors()
def credit(invoice: str, amount: str, reason: str, actor: str | None) -> None:
    """A credit on INVOICE, as a Stripe credit note."""
    from adapters.stripe.outbound.corrections import issue_credit

    with _failures(), outbox_for("corrections") as outbox:
        result = issue_credit(
            outbox, invoice, amount, reason=reason, actor=_actor(actor, "corrections")
        )
    _show(result)


@corrections_group.command("write-off")
@click.argument("invoice")
@reason_option
@actor_option
@user_errors()
def write_off_command(invoice: str, reason: str, actor: str | None) -> None:
    """Mark INVOICE uncollectible."""
    from adapters.stripe.outbound.corrections import write_off

    with _failures(), outbox_for("corrections") as outbox:
        result = write_off(outbox, invoice, reason=reason, actor=_actor(actor, "corrections"))
    _show(result)


@contextmanager
def _failures() -> Iterator[None]:
    """A correction refused by the ledger's rules or by Stripe is the user's to
    fix: one line, exit 2."""
    try:
        yield
    except _outbound_errors() as exc:
        raise UsageFailure(str(exc)) from exc


# reconcile -----------------------------------------------------------------------------


@cli.command("reconcile")
@click.option("--json", "as_json", is_flag=True, help="last line: the findings as JSON")
@click.option("--offline", is_flag=True, help="compare the ledger only (no Stripe meter read)")
@user_errors(LedgerError)
def reconcile_command(as_json: bool, offline: bool) -> None:
    """For each invoice: calls counted vs usage pushed vs Stripe's meter vs what
    was invoiced. Records the run; exit 1 when it finds a mismatch."""
    from adapters.stripe.reconcile import reconcile

    with outbox_for("reconcile") as outbox:
        report = reconcile(outbox.ledger, outbox.source, client=None if offline else outbox.client)
    findings = report.findings
    for finding in findings:
        click.echo(
            f"{finding.number or finding.invoice} {finding.entity_id} {finding.kind}: "
            f"{finding.detail}"
        )
    click.echo(f"reconciled {len(report.figures)} invoices: {len(findings)} findings")
    if as_json:
        emit_json({"checked": len(report.figures), "findings": [asdict(f) for f in findings]})
    if findings:
        sys.exit(EXIT_PROBLEM)
