"""Probes for load balancers and orchestrators: liveness without the database, readiness with it."""

from __future__ import annotations

from typing import Any, cast

from flask import Blueprint, current_app
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from backend.db import get_db
from backend.problems import ProblemError

bp = Blueprint("health", __name__)
HEAD_KEY = "respira.migration_head"


@bp.get("/healthz")
def healthz() -> dict[str, Any]:
    """The process answers; says nothing about its dependencies (restarting would not fix those)."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> dict[str, Any]:
    """Ready when the database answers and its schema is at the migrations' head revision."""
    db = get_db()
    try:
        with db.engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as exc:
        detail = f"database unavailable or not migrated: {type(exc).__name__}"
        raise ProblemError(503, "Service Unavailable", detail) from None
    head = _migration_head()
    if head is not None and revision != head:
        raise ProblemError(
            503,
            "Service Unavailable",
            f"database schema is at {revision}, expected {head}: run `flask --app backend db upgrade`",
        )
    return {"status": "ready", "database": db.dialect, "revision": revision}


def _migration_head() -> str | None:
    """The head revision of migrations/ (cached; None when the app runs without the migrations folder)."""
    if HEAD_KEY not in current_app.extensions:
        from backend.migrate import head_revision  # alembic is only needed once

        current_app.extensions[HEAD_KEY] = head_revision()
    return cast(str | None, current_app.extensions[HEAD_KEY])
