"""Configuration from the environment.

`DATABASE_URL` picks the database (default: an SQLite file in the instance folder). Other settings are
read from `RESPIRA_<NAME>` variables through Flask's `from_prefixed_env` (values parse as JSON when they
can, so RESPIRA_MAX_CONTENT_LENGTH=2097152 is a number), then `create_app(overrides)` wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

DEFAULTS: dict[str, Any] = {
    "DATABASE_URL": None,
    "MAX_CONTENT_LENGTH": 1024 * 1024,  # bytes; a workout with four full stages is a few tens of kB
    "AUTH_FAILURE_LIMIT": "10 per minute",  # failed authentications per client address, `limits` notation
    "ACCOUNT_FAILURE_LIMIT": "20 per 10 minutes",  # failed dashboard log-ins per account, any address
    # Where failure counts live, shared by all workers and hosts: "database" (default) or
    # redis://host:6379/N; memory:// counts per process (a single-process server only). backend.ratelimit
    "RATELIMIT_STORAGE_URI": "database",
    "RATELIMIT_KEY_PREFIX": "",  # tells deployments sharing one Redis apart
    "TOKEN_TOUCH_INTERVAL_S": 60,  # write a token's last_used_at at most this often
    "SQLITE_BUSY_TIMEOUT_MS": 30_000,  # how long an SQLite writer waits for the lock
    # The one proxy setting (docs/deployment.md): how many reverse proxies stand in front of the app.
    # Their X-Forwarded-For/-Proto/-Host are believed, so the client address (rate limits, logs) and the
    # scheme (secure cookies) are the real ones; 0 believes none (a client could forge them).
    "TRUSTED_PROXY_COUNT": 0,
    "LOG_LEVEL": "INFO",
    "LOG_JSON": True,  # one JSON object per log line (request logs included)
    "SQL_ECHO": False,
    # Task queue for long work (imports): redis://host:6379/0 runs it on RQ workers (`flask queue worker`);
    # unset, it runs in a thread of the web process. See backend/tasks.py.
    "QUEUE_URL": None,
    "QUEUE_NAME": "respira",
    "QUEUE_RETRIES": 2,  # a task whose worker died runs again this many times, then fails
    "QUEUE_JOB_TIMEOUT_S": 6 * 3600,  # the longest an import may run on a worker
    # With a queue, an account holding more workouts + health samples than this is deleted by a queue
    # worker in batches (DELETE /api/v1/me answers 202); smaller ones, or without a queue, at once.
    "ACCOUNT_INLINE_MAX_RECORDS": 20_000,
    "EXPORT_DIR": None,  # where export jobs write their files (shared by all workers); <instance>/exports
    # Dashboard (docs/dashboard.md). SECRET_KEY comes from RESPIRA_SECRET_KEY; required in production.
    "ENV": None,  # "production" | "development"; unset: production when gunicorn serves the app
    "PERMANENT_SESSION_LIFETIME": 12 * 3600,  # s without a visit after which a dashboard login expires
    "SESSION_ABSOLUTE_LIFETIME_S": 7 * 24 * 3600,  # s after logging in that a session ends, however used
    "SESSION_COOKIE_NAME": "respira_session",
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_SECURE": None,  # None: HTTPS-only in production, also plain HTTP in development
}


def load_config(app: Flask, overrides: Mapping[str, Any] | None = None) -> None:
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("RESPIRA")
    if os.environ.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = os.environ["DATABASE_URL"]
    if overrides:
        app.config.update(overrides)
    if not app.config["DATABASE_URL"]:
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
        app.config["DATABASE_URL"] = f"sqlite:///{Path(app.instance_path) / 'respira.sqlite3'}"
