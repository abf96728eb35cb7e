"""Session secret, cookie flags, CSRF and response headers of the dashboard.

The secret key signs the session cookie (Flask's signed-cookie sessions; the login itself is a row of
`web_sessions` that the cookie names, see backend.web.sessions).
Where it comes from depends on the deployment (`RESPIRA_ENV`, see docs/dashboard.md):

- `RESPIRA_SECRET_KEY` set: used as is (production requires at least 32 characters).
- production (RESPIRA_ENV=production, or unset while served by gunicorn) without one: refuse to start,
  because a key made up on the spot would differ between workers and hosts and change on every restart.
- development: a random key generated once into `instance/secret_key` (mode 0600) and reused, so that
  logins survive `flask run --debug` reloads; tests get a throw-away key in memory.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, Request, Response, has_request_context
from flask import request as current_request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from flask_wtf.csrf import CSRFProtect
from itsdangerous import BadSignature, SignatureExpired

MIN_SECRET_KEY_CHARS = 32
HOW_TO_GENERATE = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
SECRET_KEY_FILE = "secret_key"
ENVIRONMENTS = ("production", "development")

csrf = CSRFProtect()

# On every response of the app (pages, API answers, problem documents, static files; see create_app):
# no scripts at all, styles only from our own files, so an injected tag could neither run nor load
# anything, and no page may be framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # CSRF's HTTPS referrer check needs our own referrer
    "Cache-Control": "no-store",  # pages and API answers hold personal data and, once, a token
}


def deployment(app: Flask) -> str:
    """ "production" or "development": RESPIRA_ENV, else production exactly when gunicorn serves us."""
    env = app.config.get("ENV")
    if env is None:
        return (
            "production" if os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/") else "development"
        )
    if env not in ENVIRONMENTS:
        raise RuntimeError(f"RESPIRA_ENV must be one of {', '.join(ENVIRONMENTS)}, not {env!r}")
    return str(env)


def _instance_secret_key(instance_path: Path) -> str:
    """Read the development key, creating it first if needed (safe when two processes race to create it)."""
    path = instance_path / SECRET_KEY_FILE
    if not path.exists():
        instance_path.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{SECRET_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        tmp.write_text(secrets.token_urlsafe(48))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # atomic: exactly one creator wins, the others read the winner's key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def load_secret_key(app: Flask) -> None:
    configured = app.config.get("SECRET_KEY")
    production = deployment(app) == "production"
    if configured:
        key = str(configured)
        if production and len(key) < MIN_SECRET_KEY_CHARS:
            raise RuntimeError(
                f"RESPIRA_SECRET_KEY is too short ({len(key)} characters); use at least "
                f"{MIN_SECRET_KEY_CHARS} random ones, e.g. from {HOW_TO_GENERATE}"
            )
        app.config["SECRET_KEY"] = key
    elif production:
        raise RuntimeError(
            "RESPIRA_SECRET_KEY is not set: refusing to start in production, where dashboard sessions must "
            "be signed with one key shared by all workers and kept across restarts. Generate one with "
            + HOW_TO_GENERATE
        )
    elif app.testing:
        app.config["SECRET_KEY"] = secrets.token_urlsafe(48)
    else:
        app.config["SECRET_KEY"] = _instance_secret_key(Path(app.instance_path))


class DashboardSession(SecureCookieSession):
    expired = False  # the cookie was ours but older than PERMANENT_SESSION_LIFETIME


class DashboardSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with two changes.

    - It remembers whether a dropped cookie was merely too old: Flask silently starts a new session
      for an expired cookie; knowing it lets the login page say "your session expired".
    - An unchanged session is re-sent (its lifetime renewed) only on dashboard pages. Flask would
      re-send it on every response, stylesheets and API answers included, so a visit's idle time would
      count from the last favicon fetch, and a late static response could resurrect a cookie the
      browser had just replaced.
    """

    session_class = DashboardSession

    def should_set_cookie(self, app: Flask, session: SessionMixin) -> bool:
        if session.modified:
            return True
        on_a_page = has_request_context() and "web" in current_request.blueprints
        return on_a_page and super().should_set_cookie(app, session)

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        session = super().open_session(app, request)
        cookie = request.cookies.get(self.get_cookie_name(app))
        serializer = self.get_signing_serializer(app)
        if isinstance(session, DashboardSession) and not session and cookie and serializer is not None:
            try:
                serializer.loads(cookie, max_age=int(app.permanent_session_lifetime.total_seconds()))
            except SignatureExpired:
                session.expired = True
            except BadSignature:
                pass
        return session


def configure_sessions(app: Flask) -> None:
    """Secret key, cookie flags and CSRF settings; call once from the app factory."""
    load_secret_key(app)
    if app.config.get("SESSION_COOKIE_SECURE") is None:
        app.config["SESSION_COOKIE_SECURE"] = deployment(app) == "production"
    app.session_interface = DashboardSessionInterface()
    # CSRF is checked by the web blueprint itself (default-deny for its forms); the bearer-token API,
    # which never reads the session cookie, is left alone.
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # a form's token lives as long as the session
    csrf.init_app(app)


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def safe_next_url(target: str | None) -> str | None:
    """`target` if it is a path on this site (after logging in we go there), else None: no open redirects."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in target):
        return None
    return target
