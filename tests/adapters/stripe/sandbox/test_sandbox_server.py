"""Running the sandbox: `--state FILE` keeps everything across restarts
(objects, idempotency keys, a test clock caught mid-advance, pending webhook
deliveries), and `billtrail stripe-sandbox` serves until interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import stripe

from adapters.stripe.sandbox import start_sandbox, wait_until
from adapters.stripe.sandbox.testing import FAST_RETRIES, Clients, WebhookReceiver

START = 1767225600


def test_state_file_keeps_objects_and_idempotency_keys_across_restarts(
    tmp_path: Path,
    clients: Clients,
) -> None:
    state = tmp_path / "sandbox.json"
    with start_sandbox(state_file=state) as first:
        client = clients.make(first.api_key, first.url)
        customer = client.v1.customers.create({"name": "Ada"}, {"idempotency_key": "keep"})
        clock = client.v1.test_helpers.test_clocks.create({"frozen_time": START})
        first.control.advance_server_clock(3600)
    assert json.loads(state.read_text())["version"] == 1
    with start_sandbox(state_file=state) as second:
        client = clients.make(second.api_key, second.url)
        assert client.v1.customers.retrieve(customer.id).name == "Ada"
        assert client.v1.test_helpers.test_clocks.retrieve(clock.id).frozen_time == START
        replay = client.v1.customers.create({"name": "Ada"}, {"idempotency_key": "keep"})
        assert replay.id == customer.id
        assert second.control.faults()["http"] == []
        assert second.sandbox.clock.offset == 3600
        new = client.v1.customers.create({"name": "Bob"})
        assert new.id != customer.id


def test_pending_webhook_deliveries_resume_after_a_restart(
    tmp_path: Path,
    clients: Clients,
    webhook_receiver: WebhookReceiver,
) -> None:
    state = tmp_path / "sandbox.json"
    webhook_receiver.statuses = [500]
    with start_sandbox(state_file=state, webhook_retry_delays=(600.0,)) as first:
        client = clients.make(first.api_key, first.url)
        hook = client.v1.webhook_endpoints.create(
            {"url": webhook_receiver.url, "enabled_events": ["customer.created"]}
        )
        client.v1.customers.create()
        first.control.wait_for_deliveries(lambda d: bool(d and d[0]["attempts"]))
    with start_sandbox(state_file=state, webhook_retry_delays=FAST_RETRIES) as second:
        delivered = second.control.wait_for_deliveries(
            lambda d: bool(d and d[0]["status"] == "succeeded")
        )
    assert [a["status_code"] for a in delivered[0]["attempts"]] == [500, 200]
    retried = webhook_receiver.snapshot()[-1]
    event = stripe.Webhook.construct_event(
        retried.body, retried.headers["stripe-signature"], hook.secret
    )
    assert event.type == "customer.created"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", "from billtrail.cli import main; main()", *args]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_the_cli_prints_its_address_serves_and_stops_cleanly_on_a_signal(
    tmp_path: Path,
    clients: Clients,
    stop: signal.Signals,
) -> None:
    state = tmp_path / "cli-state.json"
    process = run_cli("stripe-sandbox", "--port", "0", "--state", str(state))
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("Stripe sandbox listening on http://127.0.0.1:")
        url = banner.split()[4]
        client = clients.make("sk_test_billtrail_sandbox", url)
        customer = client.v1.customers.create({"name": "From the CLI"})
        process.send_signal(stop)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert (process.returncode, err) == (0, "")
    assert "stopped" in out
    saved: Any = json.loads(state.read_text())
    assert customer.id in saved["objects"]["customer"]


def test_stopping_twice_is_harmless_and_the_port_is_released(clients: Clients) -> None:
    running = start_sandbox()
    client = clients.make(running.api_key, running.url)
    client.v1.customers.list()
    running.stop()
    running.stop()
    again = start_sandbox(port=running.port)
    try:
        assert again.port == running.port
        assert clients.make(again.api_key, again.url).v1.customers.list().data == []
    finally:
        again.stop()


def test_the_cli_refuses_a_busy_port_in_one_line() -> None:
    with start_sandbox() as running:
        process = run_cli("stripe-sandbox", "--port", str(running.port))
        out, err = process.communicate(timeout=20)
    assert (process.returncode, out) == (2, "")
    assert err.startswith("billtrail: stripe-sandbox cannot start:")
    assert len(err.strip().splitlines()) == 1


def test_a_clock_saved_while_advancing_finishes_advancing_after_a_restart(
    tmp_path: Path, clients: Clients
) -> None:
    state = tmp_path / "sandbox.json"
    with start_sandbox(state_file=state) as first:
        client = clients.make(first.api_key, first.url)
        clock = client.v1.test_helpers.test_clocks.create({"frozen_time": START})
        # Stand in for a crash mid-advance: the state on disk says "advancing".
        with first.sandbox.lock:
            saved = first.sandbox.store.objects["test_helpers.test_clock"][clock.id]
            saved.update(
                status="advancing",
                status_details={"advancing": {"target_frozen_time": START + 3600}},
            )
    with start_sandbox(state_file=state) as second:
        client = clients.make(second.api_key, second.url)
        ready = wait_until(
            lambda: client.v1.test_helpers.test_clocks.retrieve(clock.id),
            lambda c: c.status == "ready",
            timeout=10,
        )
    assert ready.frozen_time == START + 3600
