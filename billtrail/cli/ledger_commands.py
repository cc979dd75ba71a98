"""Operator commands on the ledger: entities, rates, calls, history, verify."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import click

from billtrail import bootstrap
from billtrail.cli import EXIT_PROBLEM, UsageFailure, cli, user_errors
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.entities.domain import BillableEntity
from ledger.errors import LedgerError
from ledger.money import parse_decimal
from ledger.seal import Link
from ledger.sources import Source, SourceKind
from ledger.usage.importer import EntityInfo, import_calls

_BASE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic", "source"}


@contextmanager
def open_ledger() -> Iterator[tuple[Settings, Ledger]]:
    settings = Settings.from_env()
    app = bootstrap.ledger(settings, projections=True)
    try:
        yield settings, app
    finally:
        app.close()


def cli_source(command: str) -> Source:
    """Who did it: the operator's login name, one id per invocation."""
    import getpass
    import uuid

    return Source(SourceKind.CLI, f"{command}/{uuid.uuid4().hex[:12]}", getpass.getuser())


def parse_date(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageFailure(f"{what} must be a date like 2026-02-01, not {text!r}") from None


def parse_instant(text: str, what: str) -> datetime:
    """An ISO time; a bare date means the end of that day in UTC."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.max.time(), UTC)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageFailure(f"{what} must be an ISO 8601 time, not {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, default=_json_default, sort_keys=True))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    raise TypeError(f"cannot show {type(value).__name__} as JSON")


# entities ------------------------------------------------------------------------


@cli.group()
def entities() -> None:
    """Billable entities (organizations and companies)."""


@entities.command("add")
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(["organization", "company"]))
@click.option("--timezone", default="UTC", show_default=True, help="IANA zone of its billing days")
@click.option("--email", "emails", multiple=True, help="billing contact (repeatable)")
@click.option("--id", "entity_id", default=None, help="entity id (default: from the name)")
@user_errors(LedgerError)
def entities_add(
    name: str, kind: str, timezone: str, emails: tuple[str, ...], entity_id: str | None
) -> None:
    """Register a billable entity and print its id."""
    with open_ledger() as (_, app):
        entity = app.register_entity(
            name,
            kind,
            cli_source("entities-add"),
            entity_id=entity_id,
            timezone=timezone,
            emails=emails,
        )
    click.echo(entity.entity_id)


def entity_document(e: BillableEntity) -> dict[str, Any]:
    return {
        "entity_id": e.entity_id,
        "name": e.name,
        "kind": e.kind,
        "timezone": e.timezone,
        "emails": list(e.emails),
        "stripe_customer_id": e.stripe_customer_id,
        "archived": e.archived,
    }


@entities.command("list")
@click.option("--json", "as_json", is_flag=True, help="last line: a JSON array")
@user_errors(LedgerError)
def entities_list(as_json: bool) -> None:
    """Every billable entity."""
    with open_ledger() as (_, app):
        docs = [entity_document(e) for e in app.entities()]
    if as_json:
        emit_json(docs)
        return
    for d in docs:
        flag = "  (archived)" if d["archived"] else ""
        click.echo(f"{d['entity_id']:<24} {d['kind']:<12} {d['timezone']:<20} {d['name']}{flag}")
    click.echo(f"{len(docs)} entities")


# rates ---------------------------------------------------------------------------


@cli.group()
def rates() -> None:
    """Contracted per-call rates."""


@rates.command("set")
@click.argument("entity")
@click.option("--per-call", "per_call", required=True, help="price per call, e.g. 0.0125")
@click.option("--currency", required=True, help="ISO currency, e.g. EUR")
@click.option("--effective-from", "effective_from", required=True, help="date it applies from")
@click.option("--reason", default="", help="why (shown in history and explain)")
@user_errors(LedgerError)
def rates_set(entity: str, per_call: str, currency: str, effective_from: str, reason: str) -> None:
    """Contract or revise ENTITY's per-call rate from a date (past dates correct history)."""
    price = parse_decimal(per_call, "--per-call")
    start = parse_date(effective_from, "--effective-from")
    with open_ledger() as (_, app):
        changed = app.set_rate(
            entity, price, currency, start, reason or "set by operator", cli_source("rates-set")
        )
        rate = app.rate(entity)
    version = rate.version_on(start)
    verb = "set" if changed else "unchanged"
    click.echo(
        f"rate of {entity} {verb}: {price} {rate.currency.upper()} per call from {start}"
        f" (version {version.version if version else '?'})"
    )


# calls ---------------------------------------------------------------------------


@cli.group()
def calls() -> None:
    """Calls handled: the usage billtrail bills."""


@calls.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--skip-invalid", is_flag=True, help="record the valid lines; write the rest aside")
@click.option("--json", "as_json", is_flag=True, help="last line: the summary as JSON")
@user_errors(LedgerError)
def calls_import(file: Path, skip_invalid: bool, as_json: bool) -> None:
    """Import calls from a CSV or JSON Lines FILE
    (call_id, entity_id, started_at, duration_seconds)."""
    with open_ledger() as (_, app):
        known = {e.entity_id: EntityInfo(e.timezone, e.archived) for e in app.entities()}
        with _progress() as progress:
            report = import_calls(
                app,
                file,
                known,
                app.clock(),
                skip_invalid=skip_invalid,
                actor=cli_source("calls-import").actor,
                progress=progress,
            )
    for bad in report.invalid:
        click.echo(f"{file}: {bad}", err=True)
    if report.invalid_count > len(report.invalid):
        click.echo(f"{file}: ... and {report.invalid_count - len(report.invalid)} more", err=True)
    if report.invalid_count and not skip_invalid:
        raise UsageFailure(
            f"{file}: {report.invalid_count} invalid line(s); nothing was recorded "
            "(fix them, or use --skip-invalid)"
        )
    for conflict in report.conflicts[:20]:
        click.echo(
            f"{file}: line {conflict.line_no}: call {conflict.call_id} conflicts: "
            f"{conflict.reason}",
            err=True,
        )
    s = report.summary()
    click.echo(
        f"recorded {s['recorded']}, duplicates {s['duplicates']}, conflicts {s['conflicts']},"
        f" invalid {s['invalid']}"
        + (f" (written to {report.rejected_file})" if report.rejected_file else "")
    )
    if as_json:
        emit_json(s)


@contextmanager
def _progress() -> Iterator[Any]:
    """A progress bar on a terminal; nothing when piped."""
    if not sys.stderr.isatty():
        yield None
        return
    bar: Any = None
    shown = 0

    def update(done: int, total: int) -> None:
        nonlocal bar, shown
        if bar is None:
            bar = click.progressbar(length=max(total, done), label="importing", file=sys.stderr)
            bar.__enter__()
        bar.update(done - shown)
        shown = done

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


# history and verify ------------------------------------------------------------------


def _describe(value: Any) -> Any:
    if isinstance(value, list):
        return [_describe(v) for v in value]
    if isinstance(value, dict):
        return {k: _describe(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _describe(getattr(value, f.name)) for f in fields(value)}
    return value


def event_document(event: Any) -> dict[str, Any]:
    changes = {k: _describe(v) for k, v in vars(event).items() if k not in _BASE_FIELDS}
    if "calls" in changes:  # thousands of calls: the count tells the story
        changes["calls"] = len(changes["calls"])
    return {
        "version": event.originator_version,
        "event": type(event).__name__,
        "recorded_at": event.timestamp,
        "source": {"kind": event.source.kind, "id": event.source.id},
        "actor": event.source.actor,
        "changes": changes,
    }


@cli.command("history")
@click.argument("kind", type=click.Choice(["invoice", "entity", "rate"]))
@click.argument("ref")
@click.option("--as-of", "as_of", default=None, help="only what was recorded by then")
@click.option("--json", "as_json", is_flag=True, help="last line: a JSON array of events")
@user_errors(LedgerError)
def history(kind: str, ref: str, as_of: str | None, as_json: bool) -> None:
    """Every event of an invoice (number or Stripe id), an entity or a rate (entity id)."""
    at = parse_instant(as_of, "--as-of") if as_of else None
    with open_ledger() as (_, app):
        if kind == "invoice":
            aggregate_id = app.find_invoice(ref).id
        elif kind == "entity":
            aggregate_id = app.entity(ref).id
        else:
            aggregate_id = app.rate(ref).id
        docs = [event_document(e) for e in app.history(aggregate_id, at)]
    if as_json:
        emit_json(docs)
        return
    for d in docs:
        actor = f" by {d['actor']}" if d["actor"] else ""
        click.echo(
            f"v{d['version']:<3} {d['recorded_at'].isoformat()}  {d['event']:<24}"
            f" from {d['source']['kind']}:{d['source']['id']}{actor}"
        )
        for key, value in d["changes"].items():
            click.echo(f"       {key}: {json.dumps(value, default=_json_default)}")


@cli.command("verify")
@user_errors(LedgerError)
def verify() -> None:
    """Recompute the seal over the whole log; exit 1 naming the first bad event."""
    with open_ledger() as (settings, app):
        path = bootstrap.checkpoint_file(settings)
        checkpoint = _read_checkpoint(path)
        result = app.verify_seal(checkpoint)
    if not result.ok:
        click.echo(f"billtrail: seal broken at {result.finding}", err=True)
        click.echo(f"checked {result.checked} events before it")
        sys.exit(EXIT_PROBLEM)
    if result.head is not None:
        _write_checkpoint(path, result.head)
    click.echo(f"verified {result.checked} events: the seal is intact")


def _read_checkpoint(path: Path) -> Link | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return Link(int(data["seq"]), int(data["notification_id"]), bytes.fromhex(data["mac"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageFailure(f"seal checkpoint {path} is unreadable: {exc}") from exc


def _write_checkpoint(path: Path, head: Link) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {"seq": head.seq, "notification_id": head.notification_id, "mac": head.mac.hex()}
        )
    )
    tmp.replace(path)
