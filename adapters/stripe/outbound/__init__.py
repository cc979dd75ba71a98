"""The outbound half of the Stripe adapter: what billtrail pushes to Stripe, each
POST with an idempotency key derived from ledger facts and recorded in the ledger
before it is sent (`outbox.Outbox`), so a crash between Stripe's answer and the
ledger write followed by a rerun never acts twice.

Public API:

- `outbox.Outbox(ledger, client, source, *, after_call=None, sleep=time.sleep)`:
  prepare, send and record requests; `StripeUnavailable`, `StripeRefused`.
- `push.push_all(outbox, *, terms=..., test_clocks=None)`: meter, calls product,
  customers (`customers.push_customers`), prices (`catalog.push_prices`) and
  subscriptions (`subscriptions.push_subscriptions`, `BillingTerms`).
- `usage.push_usage(outbox, *, days=None, entity_ids=None) -> UsagePushReport`:
  one meter event per entity and day, corrections for the difference.
- `corrections.correct_wrong_rate`, `credit_duplicate_calls`, `issue_credit`,
  `write_off`, `void_invoice`: an admin's corrections, each with a reason and an actor.
- `invoice_pull.observe_invoices` / `pull_invoices_from_stripe`: record in the
  ledger what Stripe now holds for invoices (the inbound half's mapping).

Reconciliation lives beside it: `adapters.stripe.reconcile.reconcile`."""
