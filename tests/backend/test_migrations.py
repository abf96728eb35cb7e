"""Alembic migrations: upgrade from empty and downgrade to empty work, and the models do not drift."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from api_helpers import app_config, empty_database
from sqlalchemy import inspect

from backend import create_app, migrate
from backend.db import EXTENSION_KEY, Base, Database

TABLES = {
    *("users", "api_tokens", "workouts", "stages", "segments", "pulse_readings", "idempotency_records"),
    *("health_samples", "health_workouts", "import_jobs"),  # 0002: interop
    *("web_sessions", "auth_failures"),  # 0003: security
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with empty_database(request.param, tmp_path) as url:
        db = Database(url)
        yield db
        db.dispose()


def tables(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_upgrade_from_empty_then_downgrade_to_empty(empty_db: Database) -> None:
    assert tables(empty_db) == set()
    migrate.upgrade(empty_db)
    assert tables(empty_db) == TABLES
    assert migrate.current_revision(empty_db) == migrate.head_revision()
    migrate.downgrade(empty_db, "base")
    assert tables(empty_db) == set()
    assert migrate.current_revision(empty_db) is None
    migrate.upgrade(empty_db)  # and back up again, cleanly
    assert tables(empty_db) == TABLES


def test_models_and_migrations_do_not_drift(empty_db: Database) -> None:
    migrate.upgrade(empty_db)
    with empty_db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"models differ from migrations; write a migration for: {diff}"


def test_flask_db_commands(empty_db: Database) -> None:
    app = create_app(app_config(empty_db.url))
    runner = app.test_cli_runner()
    assert "base (empty)" in runner.invoke(args=["db", "current"]).output
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"database at {migrate.head_revision()}" in result.output
    assert tables(empty_db) == TABLES
    result = runner.invoke(args=["db", "downgrade", "base"])
    assert result.exit_code == 0 and "database at base" in result.output
    assert tables(empty_db) == set()
    app.extensions[EXTENSION_KEY].dispose()
