"""The seeded whole-system simulation (see world.py): each seed's world built
twice, fault-free and with the faults the seed chooses; the faulty run must end
where the fault-free one does, and both where Stripe is.

Invariants: every invoice and every change of its state recorded once (the same
facts as the fault-free run, no state entered twice, the ledger's invoices those
of Stripe with Stripe's status); usage pushed once per entity and day (one meter
event each, summing to the calls); the read models followed by a runner killed
with kill -9 equal to a rebuild from the log; every notice sent once (each
Message-ID received once, a second time only after an interrupted attempt, with
the same Message-ID); `billtrail verify` clean."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from .world import CI, LONGER, Faults, Outcome, SeedRecord, Size, WorldPlan, run_world

# Each state an invoice enters once; PaymentFailed repeats (one per attempt).
ENTERED_ONCE = ("Drafted", "Issued", "Paid", "Voided", "MarkedUncollectible", "BecamePastDue")


def simulate(seed: int, size: Size, database_url: str, tmp_path: Path, record: SeedRecord) -> None:
    plan = WorldPlan.generate(seed, size)
    record.world = plan.describe()
    backend = "postgres" if database_url.startswith("postgresql") else "sqlite"
    size_arg = " SIZE=ci" if size == CI else ""
    record.replay = f"make simulate SEED={seed} RUNS=1{size_arg} SIM_BACKEND={backend}"
    # The fault-free run on SQLite whatever the backend under test: the facts of
    # billing do not depend on the database either.
    clean = run_world(plan, f"sqlite:///{tmp_path / 'clean.db'}", tmp_path / "clean", None)
    record.seconds["fault-free"] = clean.seconds
    faults = Faults(seed, steps=size.entities * size.months)
    record.faults = faults.injected
    faulty = run_world(plan, database_url, tmp_path / "faulty", faults)
    record.seconds["faulty"] = faulty.seconds
    check_invariants(seed, clean, faulty, faults)
    record.passed = True


def check_invariants(seed: int, clean: Outcome, faulty: Outcome, faults: Faults) -> None:
    def said(what: str) -> str:
        return f"seed {seed}: {what} (faults: {'; '.join(faults.injected)})"

    # The faults happened.
    assert faulty.webhooks_lost > 0, said("no webhook lost")
    assert faulty.webhooks_duplicated > 0, said("no webhook duplicated")
    assert faulty.sync_events_stored > 0, said("sync found nothing the lost webhooks carried")
    assert clean.sync_events_stored == 0, said("the fault-free run missed events sync found")
    assert faulty.replayed_requests > clean.replayed_requests, said("no request was replayed")
    assert any("projections run` catching up" in f for f in faults.injected), said("no kill")
    assert any("crashed after Stripe answered" in f for f in faults.injected), said("no crash")
    if faults.outage_from_start:
        assert faulty.delivery_failures > 0, said("no notice failed during the SMTP outage")
    kinds = {kind for history in clean.histories.values() for kind, _ in history}
    assert kinds >= {*ENTERED_ONCE, "PaymentFailed", "CreditNoteIssued", "Replaced"}, said(
        f"the world missed some changes of state: {sorted(kinds)}"
    )

    # Every invoice and every state change once, as in the fault-free run.
    for stripe_id, history in clean.histories.items():
        entered = Counter(kind for kind, _ in history)
        twice = [k for k in ENTERED_ONCE if entered[k] > 1]
        assert not twice, said(f"{stripe_id} entered {twice} more than once: {history}")
    assert faulty.histories.keys() == clean.histories.keys(), said("other invoices")
    for stripe_id, history in clean.histories.items():
        assert faulty.histories[stripe_id] == history, said(f"history of {stripe_id} differs")
    differs = [
        k
        for k in clean.facts.keys() | faulty.facts.keys()
        if clean.facts.get(k) != faulty.facts.get(k)
    ]
    assert not differs, said(
        f"{len(differs)} aggregates differ from the fault-free run, e.g. "
        f"{clean.facts.get(differs[0])} != {faulty.facts.get(differs[0])}"
        if differs
        else ""
    )
    # ... and as Stripe has them.
    for outcome in (clean, faulty):
        for entity_id, invoices in outcome.stripe_invoices.items():
            stripe_view = sorted((i[0], i[1]) for i in invoices)
            ledger_view = sorted((i[0], i[1]) for i in outcome.ledger_invoices.get(entity_id, []))
            assert ledger_view == stripe_view, said(f"{entity_id}: ledger vs Stripe")
    assert faulty.stripe_invoices == clean.stripe_invoices, said("Stripe holds other invoices")

    # Usage pushed once per entity and day, summing to the calls.
    for outcome in (clean, faulty):
        not_one = {k: v for k, v in outcome.meter_events.items() if len(v) != 1}
        assert not not_one, said(f"meter events not one per entity and day: {not_one}")
        summed = {k: int(sum(v)) for k, v in outcome.meter_events.items()}
        assert summed == outcome.pushed_calls, said("meter events do not sum to the calls")

    # Read models equal to a replay of the log.
    assert faulty.read_models_equal_rebuild is True, said("read models differ from a rebuild")

    # Every notice sent once.
    assert clean.past_due, said("no invoice became past due")
    assert faulty.past_due == clean.past_due, said("other invoices past due")
    # The day's record says what moved, whichever scheduler swept and wherever one
    # was killed (each run moves its invoices and records them in one save).
    truth = (len(clean.past_due), len(clean.notices))
    for outcome in (clean, faulty):
        assert list(outcome.sweeps.values()) == [truth], said(f"the day: {outcome.sweeps}")
    assert {v[:3] for v in faulty.notices.values()} == {v[:3] for v in clean.notices.values()}, (
        said("other notices")
    )
    for outcome in (clean, faulty):
        assert all(v[3] == "sent" for v in outcome.notices.values()), said(
            f"notices not sent: {[v for v in outcome.notices.values() if v[3] != 'sent']}"
        )
        emailed = {m for m, v in outcome.notices.items() if v[1] == "email"}
        assert set(outcome.received) == emailed, said("the SMTP server got other messages")
        again = {m for m, n in outcome.received.items() if n > 1}
        assert again <= outcome.interrupted, said(f"sent twice without an interruption: {again}")

    # The seal.
    for outcome in (clean, faulty):
        code, output = outcome.verify
        assert code == 0, said(f"verify: {output}")
        assert "intact" in output, said(f"verify: {output}")


@pytest.mark.slow
def test_a_seeded_run_with_faults_ends_as_the_fault_free_run(
    ci_seed: int, database_url: str, tmp_path: Path, record: SeedRecord
) -> None:
    simulate(ci_seed, CI, database_url, tmp_path, record)


@pytest.mark.slow
def test_the_longer_runs_of_make_simulate(
    simulate_seed: int, database_url: str, tmp_path: Path, record: SeedRecord
) -> None:
    size = CI if os.environ.get("BILLTRAIL_SIM_SIZE") == "ci" else LONGER
    simulate(simulate_seed, size, database_url, tmp_path, record)
