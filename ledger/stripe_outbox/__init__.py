"""The Stripe outbox: every request billtrail sends to Stripe, recorded before it
is sent with its idempotency key and parameters, and what Stripe answered; and the
admins' corrections of invoices (see domain.py)."""
