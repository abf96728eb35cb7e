"""Logging in and out of the dashboard (Flask-Login over a session kept on the server).

People log in with their user name and password (`flask --app backend users set-password NAME`). The
signed cookie holds only the key of a row of `web_sessions` (backend.web.sessions): logging out deletes
it, so a copy of the cookie is worth nothing afterwards; idle and absolute lifetimes, a new password and
"log out other sessions" end it too. Failed log-ins count against the same shared limiter as wrong API
tokens, per address and per account name; a blocked attempt is refused before any password hash is
computed, so guessing cannot be used to burn the server's CPU either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import cast

from flask import Blueprint, Flask, flash, g, redirect, render_template, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response as BaseResponse  # redirect()'s type; flask's Response is one

from backend.api.auth import auth_failure_limiter
from backend.db import get_db, get_session
from backend.models import User
from backend.web.forms import LoginForm
from backend.web.security import safe_next_url
from backend.web.sessions import (
    SessionExpired,
    end_web_session,
    end_web_sessions,
    load_web_session,
    start_web_session,
)

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
    session_key: str  # names the server-side session (Flask-Login's "user id" in the cookie)

    def get_id(self) -> str:
        return self.session_key


@login_manager.user_loader
def load_user(session_key: str) -> WebUser | None:
    try:
        live = load_web_session(get_session(), session_key)
    except SessionExpired:
        g.web_session_expired = True
        return None
    return None if live is None else WebUser(live.user_id, live.name, session_key)


def current_web_user() -> WebUser:
    return cast(WebUser, current_user._get_current_object())  # flask_login is untyped


def require_login() -> BaseResponse | None:
    """Before every web request: default-deny, like the API's token check."""
    if current_user.is_authenticated:
        return None
    if "_user_id" in session:
        logout_user()  # a login id whose server-side session has ended: drop it from the cookie too
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if getattr(session, "expired", False) or g.get("web_session_expired"):
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
def login() -> BaseResponse | tuple[str, int, dict[str, str]] | str:
    next_url = safe_next_url(request.args.get("next"))
    if current_user.is_authenticated:
        return redirect(next_url or url_for("web.workouts.index"))
    form = LoginForm()
    if not form.is_submitted():
        return render_template("web/login.html", form=form, next_url=next_url)
    limiter, client = auth_failure_limiter(), request.remote_addr or "unknown"
    account = (form.username.data or "").strip() or None
    if limiter.blocked(client, account):  # before any hash: a blocked guess costs no CPU
        wait_s = limiter.retry_after_s(client, account)
        form.form_errors.append(f"Too many failed log-ins. Try again in {wait_s} s.")
        page = render_template("web/login.html", form=form, next_url=next_url)
        return page, 429, {"Retry-After": str(wait_s)}
    if not form.validate():
        return render_template("web/login.html", form=form, next_url=next_url), 400, {}
    user = _check_credentials(form.username.data or "", form.password.data or "")
    if user is None:
        limiter.record_failure(client, account)
        log.info("failed dashboard log-in", extra={"username": form.username.data, "client": client})
        form.form_errors.append("Wrong username or password.")
        return render_template("web/login.html", form=form, next_url=next_url), 401, {}
    with get_db().session(write=True) as writer, writer.begin():
        stored = writer.get(User, user.id)
        if stored is None:  # deleted meanwhile
            return render_template("web/login.html", form=form, next_url=next_url), 401, {}
        key = start_web_session(writer, stored)
    session.clear()  # a fresh cookie session (and CSRF token) for the logged-in person
    login_user(WebUser(user.id, user.name, key))
    session.permanent = True  # the cookie lasts PERMANENT_SESSION_LIFETIME without a visit
    return redirect(next_url or url_for("web.workouts.index"))


@bp.post("/logout")
def logout() -> BaseResponse:
    end_web_session(current_web_user().session_key)  # the web blueprint has checked the CSRF token
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("web.auth.login"))


@bp.post("/sessions/end-others")
def end_other_sessions() -> BaseResponse:
    """Log out every other session of this person (another browser, a lost laptop)."""
    me = current_web_user()
    with get_db().session(write=True) as writer, writer.begin():
        ended = end_web_sessions(writer, me.user_id, except_key=me.session_key)
    flash(f"Logged out {ended} other session(s). This one stays logged in.", "info")
    return redirect(url_for("web.devices.index"), code=303)


def init_login(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.session_protection = "basic"  # a changed client marks the login non-fresh
