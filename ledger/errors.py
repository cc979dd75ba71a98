"""Named domain errors. Each message is one sentence a user can act on; the CLI
prints it on one line and exits 2, the API answers 4xx with it."""

from __future__ import annotations


class LedgerError(Exception):
    """A rule of the ledger was broken by the request; nothing was recorded."""


class InvalidAmount(LedgerError):
    pass


class CurrencyMismatch(LedgerError):
    pass


class NotFound(LedgerError):
    pass


class UnknownEntity(NotFound):
    pass


class UnknownInvoice(NotFound):
    pass


class UnknownRate(NotFound):
    pass


class EntityExists(LedgerError):
    pass


class EntityArchived(LedgerError):
    pass


class InvalidEntity(LedgerError):
    pass


class InvalidRate(LedgerError):
    pass


class InvalidTransition(LedgerError):
    """An invoice cannot go from its status to the one asked for."""


class InvalidInvoice(LedgerError):
    pass


class DuplicateCall(LedgerError):
    """A call id that this day of usage has already counted."""


class InvalidSource(LedgerError):
    pass


class NotRecordedYet(NotFound):
    """The aggregate had no events at or before the instant asked for."""


class InvalidUser(LedgerError):
    pass


class UserExists(LedgerError):
    pass


class UnknownUser(NotFound):
    pass
