"""Read models for the portal and the CLI, each fed from the ledger's log with its
tracking position written in the same transaction.

Public API:

- `projections.runner.Runner(ledger, projections=None, page=500)`: creates the
  tables (once) and feeds them. `catch_up()`, `rebuild(names)`, `status()`,
  `positions()`, `follow()` (PostgreSQL, live), `poll(interval)` (SQLite),
  `wait(notification_id)`, `stop()`. `runner.store` is what the queries take.
- `projections.runner.attach(ledger, runner)`: catch up in process after every
  command the ledger saves (the embedded SQLite mode).
- `projections.base.Store.of(ledger)`: the read models' database (the ledger's).
- Queries: `projections.invoices` (`list_invoices`, `count_invoices`,
  `find_invoice`, `InvoiceQuery`), `projections.invoice_history`
  (`invoice_status_history`, `status_on`), `projections.invoice_lines`
  (`invoice_lines`), `projections.entities` (`list_entities`, `get_entity`),
  `projections.rates` (`rate_of`, `list_rates`), `projections.usage`
  (`usage_for_period`), `projections.calls` (`calls_of`),
  `projections.notifications` (`list_notifications`).
"""
