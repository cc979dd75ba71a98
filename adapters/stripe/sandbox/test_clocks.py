"""Test clocks and the automation that runs on clock time.

Advancing a clock returns at once with status `advancing`; a worker then walks
the clock forward through every due job in time order (renewals at period
ends, finalization an hour after a renewal invoice is created, payment retries)
and sets the clock `ready`. Objects not on a test clock run the same jobs on
the server clock, before each API request. Because jobs read only the clock,
the outcome of an advance does not depend on when the worker runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from adapters.stripe.sandbox import invoices as inv
from adapters.stripe.sandbox import subscriptions as subs
from adapters.stripe.sandbox.clock import DAY, add_interval
from adapters.stripe.sandbox.context import Ctx, public, renders
from adapters.stripe.sandbox.errors import JsonDict, api_error, invalid
from adapters.stripe.sandbox.forms import Params
from adapters.stripe.sandbox.pagination import list_response, newest_first
from adapters.stripe.sandbox.routing import Route, route

CLOCK = "test_helpers.test_clock"
RETENTION = 30 * DAY
MAX_JOBS_PER_RUN = 100_000
# 2100-01-01: calendar arithmetic on periods stays far from datetime's limits.
MAX_FROZEN_TIME = 4102444800
# Same-time jobs run in this order: invoices due now settle before new ones appear.
JOB_ORDER = {"finalize": 0, "retry": 1, "renew": 2}


@dataclass(frozen=True)
class Job:
    at: int
    kind: str
    target: JsonDict

    def key(self) -> tuple[int, int, int]:
        return self.at, JOB_ORDER[self.kind], int(self.target["_seq"])


def _jobs(ctx: Ctx, clock_id: str | None) -> list[Job]:
    jobs = [
        Job(subs.period_end(ctx, s), "renew", s)
        for s in ctx.store.scan("subscription")
        if s["test_clock"] == clock_id and s["status"] in subs.RENEWING
    ]
    for invoice in ctx.store.scan("invoice"):
        if invoice["test_clock"] != clock_id or invoice.get("_deleted"):
            continue
        if invoice["status"] == "draft" and invoice["automatically_finalizes_at"]:
            jobs.append(Job(invoice["automatically_finalizes_at"], "finalize", invoice))
        elif invoice["status"] in ("open", "uncollectible") and invoice["next_payment_attempt"]:
            jobs.append(Job(invoice["next_payment_attempt"], "retry", invoice))
    return jobs


def run_due_jobs(
    ctx: Ctx, clock_id: str | None, until: int, set_now: Callable[[int], None] | None = None
) -> int:
    """Run every job due at or before `until`, earliest first; the count run."""
    for done in range(MAX_JOBS_PER_RUN):
        due = [j for j in _jobs(ctx, clock_id) if j.at <= until]
        if not due:
            return done
        job = min(due, key=Job.key)
        if set_now:
            set_now(job.at)
        _run(ctx, job)
    raise api_error("The clock's automation did not settle.")


def _run(ctx: Ctx, job: Job) -> None:
    # The scan that found the job only read; fetching the target again lets the
    # request's undo journal keep a copy before the job changes it.
    ctx.store.get("subscription" if job.kind == "renew" else "invoice", job.target["id"])
    if job.kind == "renew":
        subs.renew(ctx, job.target)
    elif job.kind == "finalize":
        inv.finalize(ctx, job.target, automatic=True)
    else:
        inv.attempt_payment(ctx, job.target, inv.default_payment_method(ctx, job.target))


# Clocks -----------------------------------------------------------------------------


@renders(CLOCK)
def render_clock(ctx: Ctx, clock: JsonDict) -> JsonDict:
    if clock.get("_deleted"):
        return {"id": clock["id"], "object": CLOCK, "deleted": True}
    return public(clock)


def create_clock(ctx: Ctx, p: Params) -> JsonDict:
    frozen_time = p.integer("frozen_time", required=True, minimum=0, maximum=MAX_FROZEN_TIME)
    name = p.text("name", max_length=300)
    p.finish()
    now = ctx.server.now()
    clock = {
        "id": ctx.store.new_id("clock"),
        "object": CLOCK,
        "created": now,
        "deletes_after": now + RETENTION,
        "frozen_time": frozen_time,
        "livemode": False,
        "name": name or None,
        "status": "ready",
        "status_details": {},
    }
    ctx.store.add(CLOCK, clock)
    ctx.emit("test_helpers.test_clock.created", clock)
    return ctx.render(clock)


def _live_clock(ctx: Ctx, clock_id: str) -> JsonDict:
    clock = ctx.store.get(CLOCK, clock_id)
    if clock.get("_deleted"):
        raise invalid(
            f"No such test_clock: '{clock_id}'", status=404, code="resource_missing", param="id"
        )
    return clock


def retrieve_clock(ctx: Ctx, p: Params, clock_id: str) -> JsonDict:
    p.finish()
    return ctx.render(ctx.store.get(CLOCK, clock_id))


def list_clocks(ctx: Ctx, p: Params) -> JsonDict:
    found = [c for c in ctx.store.all(CLOCK) if not c.get("_deleted")]
    result = list_response(ctx, p, newest_first(found), "/v1/test_helpers/test_clocks")
    p.finish()
    return result


def advance_limit(ctx: Ctx, clock: JsonDict) -> int:
    """Two intervals of the shortest subscription on the clock, or two years."""
    on_clock = [
        s
        for s in ctx.store.scan("subscription")
        if s["test_clock"] == clock["id"] and s["status"] != "canceled"
    ]
    shortest = subs.shortest_interval(ctx, on_clock)
    interval, count = shortest or ("year", 1)
    return add_interval(int(clock["frozen_time"]), interval, count, 2)


def advance_clock(ctx: Ctx, p: Params, clock_id: str) -> JsonDict:
    target = p.integer("frozen_time", required=True, minimum=0, maximum=MAX_FROZEN_TIME)
    assert target is not None
    p.finish()
    clock = _live_clock(ctx, clock_id)
    if clock["status"] != "ready":
        raise invalid(
            "The test clock is already advancing; wait until its status is ready.",
            param="frozen_time",
        )
    if target <= clock["frozen_time"]:
        raise invalid(
            "The frozen_time must be after the test clock's current frozen_time "
            f"({clock['frozen_time']}).",
            param="frozen_time",
        )
    limit = advance_limit(ctx, clock)
    if target > limit:
        raise invalid(
            "Cannot advance the test clock more than two intervals of the shortest "
            f"subscription on it (to at most {limit}).",
            param="frozen_time",
        )
    clock["status"] = "advancing"
    clock["status_details"] = {"advancing": {"target_frozen_time": target}}
    ctx.emit("test_helpers.test_clock.advancing", clock)
    ctx.after_commit.append(lambda: ctx.advance_clock(clock_id))
    return ctx.render(clock)


def complete_advance(ctx: Ctx, clock_id: str) -> None:
    """The worker's half of an advance: run the jobs, then report `ready`."""
    clock = ctx.store.lookup(CLOCK, clock_id)
    if clock is None or clock["status"] != "advancing":
        return
    target = int(clock["status_details"]["advancing"]["target_frozen_time"])

    def set_now(at: int) -> None:
        clock["frozen_time"] = at

    try:
        run_due_jobs(ctx, clock_id, target, set_now)
    except Exception:
        clock.update(status="internal_failure", status_details={})
        ctx.emit("test_helpers.test_clock.internal_failure", clock)
        raise
    clock.update(frozen_time=target, status="ready", status_details={})
    ctx.emit("test_helpers.test_clock.ready", clock)


def delete_clock(ctx: Ctx, p: Params, clock_id: str) -> JsonDict:
    p.finish()
    clock = _live_clock(ctx, clock_id)
    for customer in ctx.store.all("customer"):
        if customer["test_clock"] == clock_id and not customer.get("_deleted"):
            subs.cancel_all_for_customer(ctx, customer)
            customer["_deleted"] = True
    clock["_deleted"] = True
    ctx.emit("test_helpers.test_clock.deleted", clock)
    return ctx.render(clock)


ROUTES: list[Route] = [
    route("POST", "/v1/test_helpers/test_clocks", create_clock),
    route("GET", "/v1/test_helpers/test_clocks", list_clocks),
    route("GET", "/v1/test_helpers/test_clocks/{id}", retrieve_clock),
    route("DELETE", "/v1/test_helpers/test_clocks/{id}", delete_clock),
    route("POST", "/v1/test_helpers/test_clocks/{id}/advance", advance_clock),
]
