"""The daily Stripe jobs as the scheduler wires them (bootstrap), against the
offline Stripe sandbox: the reconcile records one run per day however often it
runs; a usage push Stripe cannot take yet is one warning line, not a crash."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from adapters.stripe.sandbox import RunningSandbox, start_sandbox
from scheduler.runner import Jobs

MakeJobs = Callable[..., Jobs]


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with start_sandbox(seed="billtrail-scheduler-tests") as running:
        yield running


@pytest.fixture
def stripe_jobs(make_jobs: MakeJobs, sandbox: RunningSandbox) -> Jobs:
    return make_jobs(STRIPE_API_BASE=sandbox.url, STRIPE_API_KEY=sandbox.api_key)


def test_the_daily_reconcile_records_one_run_per_day(stripe_jobs: Jobs, clock: Any) -> None:
    assert stripe_jobs.reconcile_stripe() == "0 invoice(s) checked, 0 finding(s)"
    assert stripe_jobs.reconcile_stripe() == "0 invoice(s) checked, 0 finding(s)"
    runs = stripe_jobs.ledger.reconciliations()
    assert [r.run_id for r in runs] == ["scheduler_run:reconcile/2026-02-20"]
    clock.advance(days=1)
    stripe_jobs.reconcile_stripe()
    assert len(stripe_jobs.ledger.reconciliations()) == 2


def test_a_usage_push_stripe_cannot_take_yet_is_one_warning_line(
    stripe_jobs: Jobs, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing was ever pushed to this Stripe: the meter does not exist.
    with caplog.at_level(logging.WARNING, logger="scheduler"):
        assert stripe_jobs.push_usage() is None
    [record] = caplog.records
    assert record.getMessage().startswith("usage-push failed: NotSetUp")
    assert record.exc_info is None
