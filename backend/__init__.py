"""Respira's trends service: Flask app factory.

    gunicorn 'backend:create_app()'          # production (settings in gunicorn.conf.py)
    flask --app backend run --debug          # development
    flask --app backend db upgrade           # schema

The backend only stores and summarises estimates; it never imports `training` or `coreml`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from werkzeug.middleware.proxy_fix import ProxyFix

from backend.clock import CLOCK_KEY
from backend.config import load_config
from backend.db import EXTENSION_KEY, Database, close_session, utcnow
from backend.ratelimit import AuthFailureLimiter


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app; `config` overrides the environment (tests pass DATABASE_URL and limits here)."""
    app = Flask(__name__, instance_relative_config=True)
    load_config(app, config)
    if isinstance(app.json, DefaultJSONProvider):  # (Flask's own; nothing here replaces it)
        app.json.sort_keys = False  # answer in the contract's field order

    from backend.request_log import configure_logging, init_request_logging

    configure_logging(app)
    init_request_logging(app)
    if count := int(app.config["TRUSTED_PROXY_COUNT"]):  # the one proxy setting (docs/deployment.md)
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count)  # type: ignore[method-assign]  # Flask's documented way to wrap it

    app.extensions[EXTENSION_KEY] = Database(
        app.config["DATABASE_URL"],
        sqlite_busy_timeout_ms=int(app.config["SQLITE_BUSY_TIMEOUT_MS"]),
        echo=bool(app.config["SQL_ECHO"]),
    )
    app.teardown_appcontext(close_session)

    from backend.api import api
    from backend.api.auth import LIMITER_KEY
    from backend.cli import register_cli
    from backend.health import bp as health_bp
    from backend.problems import register_error_handlers
    from backend.web import init_web
    from backend.web.security import add_security_headers

    app.extensions[LIMITER_KEY] = AuthFailureLimiter(
        app.config["AUTH_FAILURE_LIMIT"],
        app.config["ACCOUNT_FAILURE_LIMIT"],
        app.config["RATELIMIT_STORAGE_URI"],
        db=app.extensions[EXTENSION_KEY],
        clock=lambda: app.extensions.get(CLOCK_KEY, utcnow)(),
        key_prefix=app.config["RATELIMIT_KEY_PREFIX"],
    )
    register_error_handlers(app)
    app.after_request(add_security_headers)  # every response: pages, API answers, errors, static files
    app.register_blueprint(health_bp)
    app.register_blueprint(api)
    init_web(app)  # the dashboard: sessions, login, pages
    register_cli(app)
    return app
