"""BillableEntity: an organization or company that billtrail bills."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ledger.aggregate import LedgerAggregate
from ledger.errors import EntityArchived, InvalidEntity
from ledger.sources import Source
from ledger.values import natural_id


class EntityKind(StrEnum):
    ORGANIZATION = "organization"
    COMPANY = "company"


class Channel(StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"
    NONE = "none"


# Topics a customer can choose a channel for.
NOTIFICATION_TOPICS = ("invoice_issued", "payment_failed", "invoice_past_due", "receipt")
DEFAULT_PREFERENCES = {topic: Channel.EMAIL.value for topic in NOTIFICATION_TOPICS}

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ENTITY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63].strip("-")
    if not slug:
        raise InvalidEntity(f"cannot make an entity id from the name {name!r}; give --id")
    return slug


def check_entity_id(entity_id: str) -> str:
    if not _ENTITY_ID.fullmatch(entity_id):
        raise InvalidEntity(
            f"entity id {entity_id!r} must be 1-63 lower-case letters, digits and dashes"
        )
    return entity_id


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidEntity(f"unknown time zone {name!r}") from exc
    return name


def check_emails(emails: list[str]) -> list[str]:
    for email in emails:
        if not _EMAIL.fullmatch(email):
            raise InvalidEntity(f"not an email address: {email!r}")
    return list(emails)


def check_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise InvalidEntity("an entity needs a name")
    if len(name) > 200:
        raise InvalidEntity("an entity name is at most 200 characters")
    return name


class BillableEntity(LedgerAggregate):
    TOPIC = "billtrail:BillableEntity"

    class Event(LedgerAggregate.Event):
        pass

    class Created(Event, LedgerAggregate.Created):
        TOPIC = "billtrail:BillableEntity.Created"

    class Registered(Created):
        TOPIC = "billtrail:BillableEntity.Registered"
        entity_id: str
        name: str
        kind: str
        timezone: str
        emails: list[str]

    class Renamed(Event):
        TOPIC = "billtrail:BillableEntity.Renamed"
        name: str

        def apply(self, aggregate: Any) -> None:
            aggregate.name = self.name

    class StripeCustomerLinked(Event):
        TOPIC = "billtrail:BillableEntity.StripeCustomerLinked"
        customer_id: str

        def apply(self, aggregate: Any) -> None:
            aggregate.stripe_customer_id = self.customer_id

    class BillingContactsChanged(Event):
        TOPIC = "billtrail:BillableEntity.BillingContactsChanged"
        emails: list[str]

        def apply(self, aggregate: Any) -> None:
            aggregate.emails = list(self.emails)

    class NotificationPreferencesChanged(Event):
        TOPIC = "billtrail:BillableEntity.NotificationPreferencesChanged"
        preferences: dict[str, str]
        webhook_url: str | None

        def apply(self, aggregate: Any) -> None:
            aggregate.preferences = dict(self.preferences)
            aggregate.webhook_url = self.webhook_url

    class TimezoneSet(Event):
        TOPIC = "billtrail:BillableEntity.TimezoneSet"
        timezone: str

        def apply(self, aggregate: Any) -> None:
            aggregate.timezone = self.timezone

    class Archived(Event):
        TOPIC = "billtrail:BillableEntity.Archived"
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.archived = True

    def __init__(
        self, entity_id: str, name: str, kind: str, timezone: str, emails: list[str], source: Source
    ) -> None:
        self.entity_id = entity_id
        self.name = name
        self.kind = kind
        self.timezone = timezone
        self.emails = list(emails)
        self.stripe_customer_id: str | None = None
        self.preferences = dict(DEFAULT_PREFERENCES)
        self.webhook_url: str | None = None
        self.archived = False

    @staticmethod
    def create_id(entity_id: str) -> UUID:
        return natural_id("entity", entity_id)

    @classmethod
    def register(
        cls,
        entity_id: str,
        name: str,
        kind: str,
        timezone: str,
        emails: list[str],
        source: Source,
        at: datetime,
    ) -> BillableEntity:
        try:
            kind = EntityKind(kind).value
        except ValueError as exc:
            raise InvalidEntity(f"kind must be organization or company, not {kind!r}") from exc
        entity_id = check_entity_id(entity_id)
        return cls._create(
            cls.Registered,
            id=cls.create_id(entity_id),
            entity_id=entity_id,
            name=check_name(name),
            kind=kind,
            timezone=check_timezone(timezone),
            emails=check_emails(emails),
            source=source,
            timestamp=at,
        )

    def _check_active(self) -> None:
        if self.archived:
            raise EntityArchived(f"entity {self.entity_id} is archived")

    # Each command returns whether it recorded anything: only real changes are events.

    def rename(self, name: str, source: Source, at: datetime) -> bool:
        self._check_active()
        name = check_name(name)
        if name == self.name:
            return False
        self._record(self.Renamed, at, name=name, source=source)
        return True

    def link_stripe_customer(self, customer_id: str, source: Source, at: datetime) -> bool:
        if not customer_id.startswith("cus_"):
            raise InvalidEntity(f"not a Stripe customer id: {customer_id!r}")
        if customer_id == self.stripe_customer_id:
            return False
        self._record(self.StripeCustomerLinked, at, customer_id=customer_id, source=source)
        return True

    def change_billing_contacts(self, emails: list[str], source: Source, at: datetime) -> bool:
        self._check_active()
        emails = check_emails(emails)
        if emails == self.emails:
            return False
        self._record(self.BillingContactsChanged, at, emails=emails, source=source)
        return True

    def change_notification_preferences(
        self, preferences: dict[str, str], webhook_url: str | None, source: Source, at: datetime
    ) -> bool:
        self._check_active()
        merged = dict(self.preferences)
        for topic, channel in preferences.items():
            if topic not in NOTIFICATION_TOPICS:
                raise InvalidEntity(f"unknown notification topic {topic!r}")
            try:
                merged[topic] = Channel(channel).value
            except ValueError as exc:
                raise InvalidEntity(f"channel must be email, webhook or none: {channel!r}") from exc
        if Channel.WEBHOOK.value in merged.values() and not (webhook_url or self.webhook_url):
            raise InvalidEntity("a webhook channel needs a webhook URL")
        url = webhook_url if webhook_url is not None else self.webhook_url
        if url is not None and not url.startswith(("https://", "http://")):
            raise InvalidEntity(f"not an http(s) URL: {url!r}")
        if merged == self.preferences and url == self.webhook_url:
            return False
        self._record(
            self.NotificationPreferencesChanged,
            at,
            preferences=merged,
            webhook_url=url,
            source=source,
        )
        return True

    def set_timezone(self, timezone: str, source: Source, at: datetime) -> bool:
        self._check_active()
        timezone = check_timezone(timezone)
        if timezone == self.timezone:
            return False
        self._record(self.TimezoneSet, at, timezone=timezone, source=source)
        return True

    def archive(self, reason: str, source: Source, at: datetime) -> bool:
        if self.archived:
            return False
        self._record(self.Archived, at, reason=reason, source=source)
        return True
