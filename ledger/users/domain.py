"""Users of the portal and the API: admins, and customers bound to one billable
entity. They live in the ledger like everything else, so who could see and do what,
and since when, is part of the audited history. Passwords and API tokens are stored
only as hashes, computed by the application and handed in (event bodies replay
forever and do no work of their own)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from ledger.aggregate import LedgerAggregate
from ledger.errors import InvalidUser
from ledger.sources import Source
from ledger.values import natural_id

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Role(StrEnum):
    ADMIN = "admin"
    CUSTOMER = "customer"


def normal_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.fullmatch(email) or len(email) > 254:
        raise InvalidUser(f"not an email address: {email!r}")
    return email


class User(LedgerAggregate):
    TOPIC = "billtrail:User"

    class Event(LedgerAggregate.Event):
        pass

    class Created(Event, LedgerAggregate.Created):
        TOPIC = "billtrail:User.Created"

    class Added(Created):
        TOPIC = "billtrail:User.Added"
        email: str
        role: str
        entity_id: str | None
        password_hash: str

    class PasswordChanged(Event):
        TOPIC = "billtrail:User.PasswordChanged"
        password_hash: str

        def apply(self, aggregate: Any) -> None:
            aggregate.password_hash = self.password_hash

    class Disabled(Event):
        TOPIC = "billtrail:User.Disabled"
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.disabled = True

    def __init__(
        self, email: str, role: str, entity_id: str | None, password_hash: str, source: Source
    ) -> None:
        self.email = email
        self.role = role
        self.entity_id = entity_id
        self.password_hash = password_hash
        self.disabled = False

    @staticmethod
    def create_id(email: str) -> UUID:
        return natural_id("user", normal_email(email))

    @classmethod
    def add(
        cls,
        email: str,
        role: str,
        entity_id: str | None,
        password_hash: str,
        source: Source,
        at: datetime,
    ) -> User:
        email = normal_email(email)
        try:
            role = Role(role).value
        except ValueError as exc:
            raise InvalidUser(f"role must be admin or customer, not {role!r}") from exc
        if role == Role.CUSTOMER and not entity_id:
            raise InvalidUser("a customer is bound to one billable entity: give --entity")
        if role == Role.ADMIN and entity_id:
            raise InvalidUser("an admin sees every entity: drop --entity")
        return cls._create(
            cls.Added,
            id=cls.create_id(email),
            email=email,
            role=role,
            entity_id=entity_id,
            password_hash=password_hash,
            source=source,
            timestamp=at,
        )

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN and not self.disabled

    def change_password(self, password_hash: str, source: Source, at: datetime) -> bool:
        self._record(self.PasswordChanged, at, password_hash=password_hash, source=source)
        return True

    def disable(self, reason: str, source: Source, at: datetime) -> bool:
        if self.disabled:
            return False
        self._record(self.Disabled, at, reason=reason, source=source)
        return True


class ApiToken(LedgerAggregate):
    """A bearer token for the JSON API, owned by one user. The token's id is its
    public prefix (so a request finds its token without an index); only the
    secret's SHA-256 is stored."""

    TOPIC = "billtrail:ApiToken"

    class Event(LedgerAggregate.Event):
        pass

    class Created(Event, LedgerAggregate.Created):
        TOPIC = "billtrail:ApiToken.Created"

    class Issued(Created):
        TOPIC = "billtrail:ApiToken.Issued"
        token_id: str
        email: str
        label: str
        secret_sha256: str

    class Revoked(Event):
        TOPIC = "billtrail:ApiToken.Revoked"
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.revoked = True

    def __init__(
        self, token_id: str, email: str, label: str, secret_sha256: str, source: Source
    ) -> None:
        self.token_id = token_id
        self.email = email
        self.label = label
        self.secret_sha256 = secret_sha256
        self.revoked = False

    @staticmethod
    def create_id(token_id: str) -> UUID:
        return natural_id("api_token", token_id)

    @classmethod
    def issue(
        cls, token_id: str, email: str, label: str, secret_sha256: str, source: Source, at: datetime
    ) -> ApiToken:
        return cls._create(
            cls.Issued,
            id=cls.create_id(token_id),
            token_id=token_id,
            email=normal_email(email),
            label=label,
            secret_sha256=secret_sha256,
            source=source,
            timestamp=at,
        )

    def revoke(self, reason: str, source: Source, at: datetime) -> bool:
        if self.revoked:
            return False
        self._record(self.Revoked, at, reason=reason, source=source)
        return True
