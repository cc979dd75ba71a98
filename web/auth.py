"""Logins: Flask-Login sessions for people, bearer tokens for the JSON API.

Two roles. An admin sees everything under /admin. A customer is bound to one
billable entity and sees only /billing, its own invoices; anything of another
entity answers 404 (not 403: a customer learns nothing about what exists).

Failed logins are throttled per email and per client address (in this process:
each gunicorn worker keeps its own count, so the effective limit is per worker)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from marshmallow import Schema, fields, validate
from werkzeug.wrappers import Response

from ledger.app import Ledger
from ledger.users.domain import Role, User
from web.services import services
from web.validation import load

blueprint = Blueprint("auth", __name__)

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60


@dataclass(frozen=True)
class Principal(UserMixin):  # type: ignore[misc]
    """Who is asking: a user of the ledger, as the views need it."""

    email: str
    role: str
    entity_id: str | None

    def get_id(self) -> str:
        return self.email

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @classmethod
    def of(cls, user: User) -> Principal:
        return cls(user.email, user.role, user.entity_id)


class LoginThrottle:
    """At most MAX_FAILURES failed logins per key in WINDOW_SECONDS."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failures: dict[str, deque[float]] = {}
        self.lock = threading.Lock()

    def _recent(self, key: str) -> deque[float]:
        now = self.clock()
        seen = self.failures.setdefault(key, deque())
        while seen and seen[0] <= now - WINDOW_SECONDS:
            seen.popleft()
        return seen

    def retry_after(self, *keys: str) -> int:
        """Seconds until a login may be tried again (0: now)."""
        with self.lock:
            waits = [
                int(seen[0] + WINDOW_SECONDS - self.clock()) + 1
                for seen in map(self._recent, keys)
                if len(seen) >= MAX_FAILURES
            ]
        return max(waits, default=0)

    def failed(self, *keys: str) -> None:
        with self.lock:
            for key in keys:
                self._recent(key).append(self.clock())

    def succeeded(self, email_key: str) -> None:
        with self.lock:
            self.failures.pop(email_key, None)


class KnownUsers:
    """The users this process has loaded, each with the version of its User
    aggregate then. A request asks the ledger only whether the user has an event
    after that version (a read of the events' primary key that decodes nothing,
    usually finding none) instead of rebuilding the user from all its events; any
    change (disabled, role, entity) is such an event, so it still takes effect on
    the next request, in every process."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[UUID, int, Principal]] = {}

    def principal(self, ledger: Ledger, email: str) -> Principal | None:
        seen = self.seen.get(email)
        if seen is not None:
            user_id, version, principal = seen
            if not ledger.recorder.select_events(user_id, gt=version, limit=1):
                return principal
        user = ledger.find_user(email)
        if user is None or user.disabled:
            self.seen.pop(email, None)
            return None
        principal = Principal.of(user)
        self.seen[email] = (user.id, user.version, principal)
        return principal


class LoginSchema(Schema):
    email = fields.String(required=True, validate=validate.Length(min=3, max=254))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024))
    next = fields.String(load_default="")


def init_app(app: Flask) -> None:
    manager = LoginManager(app)
    manager.login_view = "auth.login"
    manager.login_message = "Please log in to see that page."
    manager.session_protection = "strong"
    app.extensions["billtrail.throttle"] = LoginThrottle()

    known = KnownUsers()

    def load_user(email: str) -> Principal | None:
        return known.principal(services().ledger, email)

    def load_from_token(req: Any) -> Principal | None:
        # Bearer tokens are for the JSON API only: a page never takes one.
        header = req.headers.get("Authorization", "")
        if not req.path.startswith("/api/") or not header.startswith("Bearer "):
            return None
        user = services().ledger.user_for_token(header.removeprefix("Bearer ").strip())
        return None if user is None else Principal.of(user)

    def ask_to_log_in() -> Any:
        if request.path.startswith("/api/"):
            abort(401, description="log in or send 'Authorization: Bearer <token>'")
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))

    # Flask-Login is untyped: registered through Any rather than as decorators.
    untyped: Any = manager
    untyped.user_loader(load_user)
    untyped.request_loader(load_from_token)
    untyped.unauthorized_handler(ask_to_log_in)

    app.register_blueprint(blueprint)


def _safe_next(target: str) -> str | None:
    """Only a path on this site: never an open redirect to somewhere else."""
    parts = urlsplit(target)
    if target.startswith("/") and not target.startswith("//") and not parts.netloc:
        return target
    return None


def home_of(principal: Principal) -> str:
    return url_for("admin.invoices") if principal.is_admin else url_for("billing.home")


@blueprint.get("/")
def index() -> Response:
    if current_user.is_authenticated:
        return redirect(home_of(current_user))
    return redirect(url_for("auth.login"))


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""))
    form = load(LoginSchema(), request.form)
    email = form["email"].strip().lower()
    keys = (f"email:{email}", f"addr:{request.remote_addr}")
    throttle: LoginThrottle = services_throttle()
    wait = throttle.retry_after(*keys)
    if wait:
        minutes = -(-wait // 60)
        message = f"Too many failed logins. Try again in {minutes} minute(s)."
        return render_template("login.html", next=form["next"], error=message), 429
    user = services().ledger.authenticate(email, form["password"])
    if user is None:
        throttle.failed(*keys)
        return render_template(
            "login.html", next=form["next"], error="Wrong email or password."
        ), 401
    throttle.succeeded(keys[0])
    principal = Principal.of(user)
    login_user(principal)
    return redirect(_safe_next(form["next"]) or home_of(principal))


@blueprint.post("/logout")
def logout() -> Response:
    logout_user()
    flash("You are logged out.")
    return redirect(url_for("auth.login"))


def services_throttle() -> LoginThrottle:
    throttle: LoginThrottle = current_app.extensions["billtrail.throttle"]
    return throttle


def guard(bp: Blueprint, role: str | None, *, public: tuple[str, ...] = ()) -> None:
    """Every view of `bp` needs a login (and `role`, when given). The check sits on
    the blueprint so no view can forget it. Someone logged in without the role gets
    404: the pages do not exist for them."""

    @bp.before_request
    def check() -> Any:
        if request.endpoint in public:
            return None
        if not current_user.is_authenticated:
            return unauthorized()
        if role == Role.ADMIN and not current_user.is_admin:
            abort(404)
        if role == Role.CUSTOMER and (current_user.role != role or not current_user.entity_id):
            abort(404)
        return None


def unauthorized() -> Any:
    """What Flask-Login answers to no login: the login page, or 401 under /api/."""
    manager: LoginManager = current_app.login_manager  # type: ignore[attr-defined]
    return manager.unauthorized()
