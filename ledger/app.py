"""The Ledger: every concept's commands on one application, one log."""

from __future__ import annotations

from ledger.invoices.application import InvoiceCommands
from ledger.notifications.application import NotificationCommands
from ledger.rates.application import RateCommands
from ledger.reconciliation.application import ReconciliationCommands
from ledger.stripe_inbox.application import StripeInboxCommands
from ledger.stripe_outbox.application import OutboxCommands
from ledger.usage.application import UsageCommands
from ledger.users.application import UserCommands


class Ledger(
    InvoiceCommands,
    UsageCommands,
    RateCommands,
    StripeInboxCommands,
    NotificationCommands,
    OutboxCommands,
    ReconciliationCommands,
    UserCommands,
):
    """billtrail's event-sourced audit ledger."""
