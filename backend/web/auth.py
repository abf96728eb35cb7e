"""Logging in and out of the dashboard (Flask-Login over Flask's signed-cookie session).

People log in with their user name and password (`flask --app backend users set-password NAME`); the
session remembers a login id of the form `<user id>:<password fingerprint>`, so setting a new password
ends every existing session of that user without any table of sessions. Failed log-ins count against
the same per-address limiter as wrong API tokens: one budget for guessing, whichever door is tried.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from functools import cache

from flask import Blueprint, Flask, Response, flash, redirect, render_template, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from backend.api.auth import auth_failure_limiter
from backend.db import get_session
from backend.models import User
from backend.web.forms import LoginForm
from backend.web.security import safe_next_url

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
log = logging.getLogger("respira.web")

# Endpoints reachable without logging in (everything else in the web blueprint needs a login).
PUBLIC_ENDPOINTS = frozenset({"web.auth.login"})


@dataclass(frozen=True)
class WebUser(UserMixin):
    """The logged-in person as the pages need them: no ORM object outlives its request's session."""

    user_id: int
    name: str
    fingerprint: str

    def get_id(self) -> str:
        return f"{self.user_id}:{self.fingerprint}"

    @classmethod
    def from_model(cls, user: User) -> WebUser:
        return cls(user.id, user.name, password_fingerprint(user.password_hash or ""))


def password_fingerprint(password_hash: str) -> str:
    """A short digest of the stored hash: changes whenever the password does, reveals nothing of it."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


@login_manager.user_loader
def load_user(login_id: str) -> WebUser | None:
    user_part, _, fingerprint = login_id.partition(":")
    if not user_part.isdigit():
        return None
    user = get_session().get(User, int(user_part))
    if user is None or not user.password_hash:
        return None
    web_user = WebUser.from_model(user)
    return web_user if hmac.compare_digest(web_user.fingerprint, fingerprint) else None


def current_web_user() -> WebUser:
    return current_user._get_current_object()  # type: ignore[no-any-return]


def require_login() -> Response | None:
    """Before every web request: default-deny, like the API's token check."""
    if request.endpoint in PUBLIC_ENDPOINTS or current_user.is_authenticated:
        return None
    if getattr(session, "expired", False):
        flash("Your session expired. Please log in again.", "info")
    else:
        flash("Please log in to see that page.", "info")
    target = request.full_path.rstrip("?") if request.method == "GET" else None
    return redirect(url_for("web.auth.login", next=target))


@cache
def _dummy_hash() -> str:
    """Checked against when the user does not exist, so a wrong name costs as long as a wrong password."""
    return generate_password_hash("respira: no such user")


def _check_credentials(name: str, password: str) -> User | None:
    user = get_session().scalars(select(User).where(User.name == name)).one_or_none()
    if user is None or not user.password_hash:
        check_password_hash(_dummy_hash(), password)
        return None
    return user if user.check_password(password) else None


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int, dict[str, str]] | str:
    next_url = safe_next_url(request.args.get("next"))
    if current_user.is_authenticated:
        return redirect(next_url or url_for("web.workouts.index"))
    form = LoginForm()
    if not form.is_submitted():
        return render_template("web/login.html", form=form, next_url=next_url)
    limiter, client = auth_failure_limiter(), request.remote_addr or "unknown"
    if limiter.blocked(client):
        wait_s = limiter.retry_after_s(client)
        form.form_errors.append(f"Too many failed log-ins from this address. Try again in {wait_s} s.")
        page = render_template("web/login.html", form=form, next_url=next_url)
        return page, 429, {"Retry-After": str(wait_s)}
    if not form.validate():
        return render_template("web/login.html", form=form, next_url=next_url), 400, {}
    user = _check_credentials(form.username.data or "", form.password.data or "")
    if user is None:
        limiter.record_failure(client)
        log.info("failed dashboard log-in", extra={"username": form.username.data, "client": client})
        form.form_errors.append("Wrong username or password.")
        return render_template("web/login.html", form=form, next_url=next_url), 401, {}
    session.clear()  # a fresh session (and CSRF token) for the logged-in person
    login_user(WebUser.from_model(user))
    session.permanent = True  # expires after PERMANENT_SESSION_LIFETIME without a visit
    return redirect(next_url or url_for("web.workouts.index"))


@bp.post("/logout")
def logout() -> Response:
    logout_user()  # the web blueprint has checked the CSRF token already
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("web.auth.login"))


def init_login(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.session_protection = "basic"  # a changed client marks the login non-fresh
