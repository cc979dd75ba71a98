"""Commands and queries on billable entities."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ledger.application import LedgerBase, topics_of
from ledger.entities.domain import BillableEntity, slugify
from ledger.errors import EntityExists, UnknownEntity
from ledger.sources import Source


def _missing(entity_id: str) -> UnknownEntity:
    return UnknownEntity(f"no billable entity {entity_id!r}")


class EntityCommands(LedgerBase):
    def register_entity(
        self,
        name: str,
        kind: str,
        source: Source,
        *,
        entity_id: str | None = None,
        timezone: str = "UTC",
        emails: Sequence[str] = (),
    ) -> BillableEntity:
        entity = BillableEntity.register(
            entity_id=entity_id or slugify(name),
            name=name,
            kind=kind,
            timezone=timezone,
            emails=list(emails),
            source=source,
            at=self.clock(),
        )
        if not self._create(entity):
            raise EntityExists(f"entity {entity.entity_id!r} already exists")
        return entity

    def entity(self, entity_id: str) -> BillableEntity:
        return self.load(
            BillableEntity, BillableEntity.create_id(entity_id), lambda: _missing(entity_id)
        )

    def entity_as_recorded(self, entity_id: str, at: datetime) -> BillableEntity:
        return self.as_recorded(
            BillableEntity, BillableEntity.create_id(entity_id), at, lambda: _missing(entity_id)
        )

    def entities(self) -> list[BillableEntity]:
        """Every entity, in registration order. (The portal reads the projection.)"""
        ids = [e.entity_id for e in self.events_of_topics(topics_of(BillableEntity.Registered))]
        return [self.entity(entity_id) for entity_id in ids]

    def _entity_change(self, entity_id: str, command: str, source: Source, change: object) -> bool:
        return self._change(
            BillableEntity,
            BillableEntity.create_id(entity_id),
            command,
            source,
            change,  # type: ignore[arg-type]
            lambda: _missing(entity_id),
        )

    def rename_entity(self, entity_id: str, name: str, source: Source) -> bool:
        at = self.clock()
        return self._entity_change(
            entity_id, "rename", source, lambda e: e.rename(name, source, at)
        )

    def link_stripe_customer(self, entity_id: str, customer_id: str, source: Source) -> bool:
        at = self.clock()
        return self._entity_change(
            entity_id,
            "link_stripe_customer",
            source,
            lambda e: e.link_stripe_customer(customer_id, source, at),
        )

    def change_billing_contacts(
        self, entity_id: str, emails: Sequence[str], source: Source
    ) -> bool:
        at = self.clock()
        return self._entity_change(
            entity_id,
            "change_billing_contacts",
            source,
            lambda e: e.change_billing_contacts(list(emails), source, at),
        )

    def change_notification_preferences(
        self,
        entity_id: str,
        preferences: dict[str, str],
        source: Source,
        webhook_url: str | None = None,
    ) -> bool:
        at = self.clock()
        return self._entity_change(
            entity_id,
            "change_notification_preferences",
            source,
            lambda e: e.change_notification_preferences(preferences, webhook_url, source, at),
        )

    def set_entity_timezone(self, entity_id: str, timezone: str, source: Source) -> bool:
        at = self.clock()
        return self._entity_change(
            entity_id, "set_timezone", source, lambda e: e.set_timezone(timezone, source, at)
        )

    def archive_entity(self, entity_id: str, reason: str, source: Source) -> bool:
        at = self.clock()
        return self._entity_change(
            entity_id, "archive", source, lambda e: e.archive(reason, source, at)
        )
