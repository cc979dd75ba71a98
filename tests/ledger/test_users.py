"""Portal users and API tokens in the ledger: roles, hashes, refusals."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.app import Ledger
from ledger.errors import InvalidUser, UnknownEntity, UserExists
from ledger.sources import Source
from ledger.users.application import hash_password, password_matches
from ledger.users.domain import User

OPERATOR = Source("cli", "users-tests", actor="operator")
PASSWORD = "a long enough password"


@pytest.fixture
def entity(ledger: Ledger) -> str:
    ledger.register_entity("Acme Corp", "company", OPERATOR, entity_id="acme")
    return "acme"


def test_an_admin_and_a_customer_are_recorded_with_their_role_and_entity(
    ledger: Ledger, entity: str
) -> None:
    ledger.add_user("Admin@Example.com", "admin", PASSWORD, OPERATOR)
    ledger.add_user("ap@acme.example", "customer", PASSWORD, OPERATOR, entity_id=entity)
    users = {u.email: (u.role, u.entity_id) for u in ledger.users()}
    assert users == {"admin@example.com": ("admin", None), "ap@acme.example": ("customer", "acme")}


def test_the_password_is_stored_only_as_a_salted_hash(ledger: Ledger) -> None:
    ledger.add_user("a@example.com", "admin", PASSWORD, OPERATOR)
    ledger.add_user("b@example.com", "admin", PASSWORD, OPERATOR)
    events = [e for u in ledger.users() for e in ledger.history(u.id)]
    hashes = {e.password_hash for e in events if isinstance(e, User.Added)}
    assert len(hashes) == 2  # same password, different salts
    assert all(PASSWORD not in h for h in hashes)


def test_authenticate_takes_the_right_password_only(ledger: Ledger) -> None:
    ledger.add_user("a@example.com", "admin", PASSWORD, OPERATOR)
    assert ledger.authenticate("A@example.com", PASSWORD) is not None
    assert ledger.authenticate("a@example.com", PASSWORD + "x") is None
    assert ledger.authenticate("nobody@example.com", PASSWORD) is None
    assert ledger.authenticate("not an email", PASSWORD) is None


def test_a_disabled_user_cannot_authenticate_or_use_a_token(ledger: Ledger) -> None:
    ledger.add_user("a@example.com", "admin", PASSWORD, OPERATOR)
    token = ledger.issue_api_token("a@example.com", "ci", OPERATOR)
    assert ledger.user_for_token(token) is not None
    assert ledger.disable_user("a@example.com", "left", OPERATOR)
    assert not ledger.disable_user("a@example.com", "left", OPERATOR)  # once is enough
    assert ledger.authenticate("a@example.com", PASSWORD) is None
    assert ledger.user_for_token(token) is None


def test_a_changed_password_replaces_the_old_one(ledger: Ledger) -> None:
    ledger.add_user("a@example.com", "admin", PASSWORD, OPERATOR)
    ledger.change_password("a@example.com", "another long password", OPERATOR)
    assert ledger.authenticate("a@example.com", PASSWORD) is None
    assert ledger.authenticate("a@example.com", "another long password") is not None


def test_a_token_is_stored_as_a_hash_and_a_tampered_token_fails(ledger: Ledger) -> None:
    ledger.add_user("a@example.com", "admin", PASSWORD, OPERATOR)
    token = ledger.issue_api_token("a@example.com", "ci", OPERATOR)
    user = ledger.user_for_token(token)
    assert user is not None
    assert user.email == "a@example.com"
    secret = token.rsplit("_", 1)[1]
    assert all(secret not in str(vars(e)) for e in ledger.history(user.id))
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert ledger.user_for_token(flipped) is None


@pytest.mark.parametrize(
    ("email", "role", "entity_id", "password", "error"),
    [
        ("not-an-email", "admin", None, PASSWORD, InvalidUser),
        ("a@example.com", "owner", None, PASSWORD, InvalidUser),
        ("a@example.com", "customer", None, PASSWORD, InvalidUser),
        ("a@example.com", "admin", "acme", PASSWORD, InvalidUser),
        ("a@example.com", "customer", "no-such-entity", PASSWORD, UnknownEntity),
        ("a@example.com", "admin", None, "short", InvalidUser),
        ("a@example.com", "admin", None, " " * 12, InvalidUser),
    ],
)
def test_bad_users_are_refused_and_nothing_is_recorded(
    ledger: Ledger,
    entity: str,
    email: str,
    role: str,
    entity_id: str | None,
    password: str,
    error: type[Exception],
) -> None:
    with pytest.raises(error):
        ledger.add_user(email, role, password, OPERATOR, entity_id=entity_id)
    assert ledger.users() == []


def test_the_same_email_twice_is_refused(ledger: Ledger) -> None:
    ledger.add_user("a@example.com", "admin", PASSWORD, OPERATOR)
    with pytest.raises(UserExists):
        ledger.add_user("A@EXAMPLE.COM", "admin", PASSWORD, OPERATOR)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=st.text(min_size=1, max_size=40), other=st.text(min_size=1, max_size=40))
def test_a_hash_matches_its_password_and_no_other(password: str, other: str) -> None:
    stored = hash_password(password, b"0123456789abcdef")
    assert password_matches(password, stored)
    assert password_matches(other, stored) == (other == password)
