"""Reconciliation runs: for each invoice, the calls the ledger counted, the usage
pushed to Stripe and the quantity Stripe invoiced, and every mismatch found, kept
as findings of the run (see domain.py). The comparison itself is made by the
Stripe adapter (`adapters/stripe/reconcile.py`), which reads the ledger and
Stripe's meter; the ledger keeps what it found."""
