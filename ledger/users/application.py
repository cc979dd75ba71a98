"""Commands and queries on portal users and API tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from ledger.application import topics_of
from ledger.entities.application import EntityCommands
from ledger.errors import InvalidUser, UnknownUser, UserExists
from ledger.sources import Source
from ledger.users.domain import ApiToken, User

MIN_PASSWORD = 10
# scrypt at n=2**14, r=8 (~16 MiB, tens of ms): slow enough to make a stolen log
# expensive to crack, fast enough for a login.
_N, _R, _P = 2**14, 8, 1
_TOKEN = re.compile(r"^bt_([0-9a-f]{16})_([A-Za-z0-9_-]{32,64})$")


def hash_password(password: str, salt: bytes) -> str:
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.urlsafe_b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, base64.urlsafe_b64decode(digest))


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD or not password.strip():
        raise InvalidUser(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise InvalidUser("a password is at most 1024 characters")
    return password


# Compared against when the email is unknown, so a login takes as long either way.
_DUMMY = hash_password("not-a-password", b"billtrail-dummy!")


def _missing(email: str) -> UnknownUser:
    return UnknownUser(f"no user {email!r}")


class UserCommands(EntityCommands):
    def add_user(
        self,
        email: str,
        role: str,
        password: str,
        source: Source,
        *,
        entity_id: str | None = None,
    ) -> User:
        if entity_id is not None:
            self.entity(entity_id)  # a customer's entity must exist
        user = User.add(
            email=email,
            role=role,
            entity_id=entity_id,
            password_hash=hash_password(check_password(password), secrets.token_bytes(16)),
            source=source,
            at=self.clock(),
        )
        if not self._create(user):
            raise UserExists(f"user {user.email!r} already exists")
        return user

    def user(self, email: str) -> User:
        return self.load(User, User.create_id(email), lambda: _missing(email))

    def find_user(self, email: str) -> User | None:
        try:
            return self.user(email)
        except (UnknownUser, InvalidUser):
            return None

    def users(self) -> list[User]:
        emails = [e.email for e in self.events_of_topics(topics_of(User.Added))]
        return [self.user(email) for email in emails]

    def authenticate(self, email: str, password: str) -> User | None:
        """The active user with this email and password, else None (unknown email,
        disabled user and wrong password look the same to the caller)."""
        user = self.find_user(email)
        if user is None:
            password_matches(password, _DUMMY)
            return None
        if not password_matches(password, user.password_hash) or user.disabled:
            return None
        return user

    def change_password(self, email: str, password: str, source: Source) -> bool:
        password_hash = hash_password(check_password(password), secrets.token_bytes(16))
        at = self.clock()
        return self._change(
            User,
            User.create_id(email),
            "change_password",
            source,
            lambda u: u.change_password(password_hash, source, at),
            lambda: _missing(email),
        )

    def disable_user(self, email: str, reason: str, source: Source) -> bool:
        at = self.clock()
        return self._change(
            User,
            User.create_id(email),
            "disable",
            source,
            lambda u: u.disable(reason, source, at),
            lambda: _missing(email),
        )

    def issue_api_token(self, email: str, label: str, source: Source) -> str:
        """A new bearer token for the user; returned once, stored only as a hash."""
        user = self.user(email)
        if user.disabled:
            raise InvalidUser(f"user {user.email!r} is disabled")
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        token = ApiToken.issue(
            token_id=token_id,
            email=user.email,
            label=label,
            secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
            source=source,
            at=self.clock(),
        )
        self._create(token)
        return f"bt_{token_id}_{secret}"

    def user_for_token(self, token: str) -> User | None:
        """The active user a bearer token belongs to, else None."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        token_id, secret = match.groups()
        try:
            issued = self.load(ApiToken, ApiToken.create_id(token_id), lambda: _missing(token_id))
        except UnknownUser:
            return None
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if issued.revoked or not hmac.compare_digest(digest, issued.secret_sha256):
            return None
        user = self.find_user(issued.email)
        return None if user is None or user.disabled else user
