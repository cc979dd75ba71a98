"""BillableEntity: registration, its validation, and the rule that only real changes
become events."""

from __future__ import annotations

import pytest

from ledger.app import Ledger
from ledger.entities.domain import DEFAULT_PREFERENCES, BillableEntity
from ledger.errors import EntityArchived, EntityExists, InvalidEntity, UnknownEntity
from ledger.sources import Source

ADMIN = Source("admin", "admin-1", actor="alice@example.com")


def head(ledger: Ledger) -> int:
    """The log's max notification id: grows by one per recorded event."""
    return ledger.recorder.max_notification_id() or 0


def topics(ledger: Ledger, entity_id: str) -> list[str]:
    return [type(e).__name__ for e in ledger.history(BillableEntity.create_id(entity_id))]


def test_register_records_one_event_with_every_field(ledger: Ledger) -> None:
    entity = ledger.register_entity(
        "Acme Corp.",
        "company",
        ADMIN,
        timezone="Europe/Berlin",
        emails=["billing@acme.example"],
    )
    assert entity.entity_id == "acme-corp"
    loaded = ledger.entity("acme-corp")
    assert (loaded.name, loaded.kind, loaded.timezone) == ("Acme Corp.", "company", "Europe/Berlin")
    assert loaded.emails == ["billing@acme.example"]
    assert loaded.preferences == DEFAULT_PREFERENCES
    assert loaded.archived is False
    assert loaded.stripe_customer_id is None
    [registered] = ledger.history(loaded.id)
    assert type(registered).__name__ == "Registered"
    assert registered.source == ADMIN
    assert registered.timestamp == ledger.clock()
    assert head(ledger) == 1


@pytest.mark.parametrize("kind", ["organization", "company"])
def test_both_kinds_can_be_registered(ledger: Ledger, kind: str) -> None:
    ledger.register_entity("Some Name", kind, ADMIN, entity_id="some")
    assert ledger.entity("some").kind == kind


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "person"}, "kind must be organization or company"),
        ({"kind": "Company"}, "kind must be organization or company"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"timezone": "../etc/passwd"}, "unknown time zone"),
        ({"emails": ["not-an-email"]}, "not an email address"),
        ({"emails": ["ok@example.com", "two@@example.com"]}, "not an email address"),
        ({"entity_id": "Upper"}, "lower-case letters"),
        ({"entity_id": "-leading-dash"}, "lower-case letters"),
        ({"entity_id": "a" * 64}, "lower-case letters"),
        ({"entity_id": "has space"}, "lower-case letters"),
        ({"entity_id": "acme\n"}, "lower-case letters"),  # `$` matches before a newline
        ({"emails": ["billing@acme.example\n"]}, "not an email address"),
        ({"name": "   "}, "needs a name"),
        ({"name": "x" * 201}, "at most 200 characters"),
        ({"name": "!!!", "entity_id": None}, "cannot make an entity id"),
    ],
)
def test_invalid_registrations_raise_and_record_nothing(
    ledger: Ledger, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"name": "Acme", "kind": "company", "entity_id": "acme"}
    args.update(kwargs)
    with pytest.raises(InvalidEntity, match=message):
        ledger.register_entity(source=ADMIN, **args)  # type: ignore[arg-type]
    assert head(ledger) == 0


def test_registering_the_same_id_twice_raises_entity_exists(ledger: Ledger) -> None:
    ledger.register_entity("Acme", "company", ADMIN)
    with pytest.raises(EntityExists, match="acme"):
        ledger.register_entity("ACME!", "organization", ADMIN)
    assert ledger.entity("acme").kind == "company"
    assert head(ledger) == 1


def test_rename_to_the_same_name_returns_false_and_records_nothing(ledger: Ledger) -> None:
    ledger.register_entity("Acme Corp", "company", ADMIN, entity_id="acme")
    assert ledger.rename_entity("acme", "Acme Corp", ADMIN) is False
    # Whitespace is normalised before comparing, so this is the same name too.
    assert ledger.rename_entity("acme", "  Acme   Corp ", ADMIN) is False
    assert head(ledger) == 1
    assert ledger.rename_entity("acme", "Acme Inc", ADMIN) is True
    assert ledger.entity("acme").name == "Acme Inc"
    assert topics(ledger, "acme") == ["Registered", "Renamed"]


def test_every_change_command_records_only_real_changes(ledger: Ledger, clock) -> None:
    ledger.register_entity("Acme", "company", ADMIN, emails=["a@acme.example"])
    clock.advance(minutes=1)
    assert ledger.set_entity_timezone("acme", "America/New_York", ADMIN) is True
    assert ledger.set_entity_timezone("acme", "America/New_York", ADMIN) is False
    assert ledger.change_billing_contacts("acme", ["b@acme.example"], ADMIN) is True
    assert ledger.change_billing_contacts("acme", ["b@acme.example"], ADMIN) is False
    assert ledger.link_stripe_customer("acme", "cus_123", ADMIN) is True
    assert ledger.link_stripe_customer("acme", "cus_123", ADMIN) is False
    entity = ledger.entity("acme")
    assert entity.timezone == "America/New_York"
    assert entity.emails == ["b@acme.example"]
    assert entity.stripe_customer_id == "cus_123"
    assert topics(ledger, "acme") == [
        "Registered",
        "TimezoneSet",
        "BillingContactsChanged",
        "StripeCustomerLinked",
    ]


def test_bad_values_on_change_commands_raise_and_record_nothing(ledger: Ledger) -> None:
    ledger.register_entity("Acme", "company", ADMIN)
    with pytest.raises(InvalidEntity, match="unknown time zone"):
        ledger.set_entity_timezone("acme", "Europe/Atlantis", ADMIN)
    with pytest.raises(InvalidEntity, match="not an email"):
        ledger.change_billing_contacts("acme", ["nope"], ADMIN)
    with pytest.raises(InvalidEntity, match="not a Stripe customer id"):
        ledger.link_stripe_customer("acme", "acct_123", ADMIN)
    assert head(ledger) == 1


def test_archive_blocks_every_change_and_archiving_again_is_a_no_op(ledger: Ledger) -> None:
    ledger.register_entity("Acme", "company", ADMIN)
    assert ledger.archive_entity("acme", "customer left", ADMIN) is True
    assert ledger.archive_entity("acme", "again", ADMIN) is False
    assert ledger.entity("acme").archived is True
    before = head(ledger)
    with pytest.raises(EntityArchived):
        ledger.rename_entity("acme", "New Name", ADMIN)
    with pytest.raises(EntityArchived):
        ledger.set_entity_timezone("acme", "Asia/Tokyo", ADMIN)
    with pytest.raises(EntityArchived):
        ledger.change_billing_contacts("acme", ["x@acme.example"], ADMIN)
    with pytest.raises(EntityArchived):
        ledger.change_notification_preferences("acme", {"receipt": "none"}, ADMIN)
    assert head(ledger) == before


def test_preferences_merge_per_topic(ledger: Ledger) -> None:
    ledger.register_entity("Acme", "company", ADMIN)
    assert ledger.change_notification_preferences("acme", {"receipt": "none"}, ADMIN) is True
    assert ledger.entity("acme").preferences == {**DEFAULT_PREFERENCES, "receipt": "none"}
    assert ledger.change_notification_preferences("acme", {"receipt": "none"}, ADMIN) is False
    assert (
        ledger.change_notification_preferences(
            "acme",
            {"invoice_past_due": "webhook"},
            ADMIN,
            webhook_url="https://hooks.acme.example/billing",
        )
        is True
    )
    entity = ledger.entity("acme")
    assert entity.preferences == {
        **DEFAULT_PREFERENCES,
        "receipt": "none",
        "invoice_past_due": "webhook",
    }
    assert entity.webhook_url == "https://hooks.acme.example/billing"
    # The URL already stored serves a second webhook topic.
    assert ledger.change_notification_preferences("acme", {"receipt": "webhook"}, ADMIN) is True


@pytest.mark.parametrize(
    ("preferences", "url", "message"),
    [
        ({"birthday": "email"}, None, "unknown notification topic"),
        ({"receipt": "sms"}, None, "channel must be email, webhook or none"),
        ({"receipt": "webhook"}, None, "needs a webhook URL"),
        ({"receipt": "webhook"}, "ftp://hooks.example", "not an http"),
    ],
)
def test_invalid_preferences_raise_and_record_nothing(
    ledger: Ledger, preferences: dict[str, str], url: str | None, message: str
) -> None:
    ledger.register_entity("Acme", "company", ADMIN)
    with pytest.raises(InvalidEntity, match=message):
        ledger.change_notification_preferences("acme", preferences, ADMIN, webhook_url=url)
    assert ledger.entity("acme").preferences == DEFAULT_PREFERENCES
    assert head(ledger) == 1


def test_unknown_entity_raises_unknown_entity(ledger: Ledger) -> None:
    with pytest.raises(UnknownEntity, match="ghost"):
        ledger.entity("ghost")
    with pytest.raises(UnknownEntity, match="ghost"):
        ledger.rename_entity("ghost", "Boo", ADMIN)


def test_entities_are_listed_in_registration_order(ledger: Ledger) -> None:
    for name in ["Zeta", "Alpha", "Mid"]:
        ledger.register_entity(name, "organization", ADMIN)
    ledger.rename_entity("zeta", "Zeta Two", ADMIN)
    assert [(e.entity_id, e.name) for e in ledger.entities()] == [
        ("zeta", "Zeta Two"),
        ("alpha", "Alpha"),
        ("mid", "Mid"),
    ]
