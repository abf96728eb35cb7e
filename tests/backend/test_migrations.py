"""Alembic migrations: upgrade from empty and downgrade to empty work, and the models do not drift."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from api_helpers import app_config, empty_database
from sqlalchemy import inspect
from sqlalchemy import text as sa_text

from backend import create_app, migrate
from backend.db import EXTENSION_KEY, Base, Database

OLD = datetime(2026, 11, 1, 12, 0)  # naive: how SQLite holds UTC instants (PostgreSQL reads it as UTC)
TABLES = {
    *("users", "api_tokens", "workouts", "stages", "segments", "pulse_readings", "idempotency_records"),
    *("health_samples", "health_workouts", "import_jobs"),  # 0002: interop
    *("web_sessions", "auth_failures"),  # 0003: security
    "fitness_markers",  # 0004: fitness markers, import report
    "stage_summaries",  # 0005: what the trends read
    "export_jobs",  # 0006: exports written in the background (and users.deletion_requested_at)
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


def test_0004_keeps_rows_stored_before_it(empty_db: Database) -> None:
    """Samples, health-app workouts and jobs stored under 0003 survive, with a stored time and a report."""
    migrate.upgrade(empty_db, "0003")
    with empty_db.engine.begin() as conn:
        conn.execute(sa_text("INSERT INTO users (id, name, created_at) VALUES (1, 'ana', :t)"), {"t": OLD})
        conn.execute(
            sa_text(
                "INSERT INTO health_samples (user_id, kind, started_at, ended_at, bpm, source) "
                "VALUES (1, 'heart_rate', :t, :t, 61, 'Watch')"
            ),
            {"t": OLD},
        )
        conn.execute(
            sa_text(
                "INSERT INTO health_workouts (user_id, source, activity_type, started_at, ended_at) "
                "VALUES (1, 'Watch', 'Running', :t, :t)"
            ),
            {"t": OLD},
        )
        conn.execute(
            sa_text(
                "INSERT INTO import_jobs (uuid, user_id, kind, status, bytes_done, counts, warnings, "
                "created_at) VALUES (:u, 1, 'json', 'succeeded', 0, '{}', '[]', :t)"
            ),
            {
                "u": uuid.uuid4().hex if empty_db.engine.dialect.name == "sqlite" else str(uuid.uuid4()),
                "t": OLD,
            },
        )
    migrate.upgrade(empty_db)
    with empty_db.engine.connect() as conn:
        assert conn.execute(sa_text("SELECT bpm FROM health_samples")).scalars().all() == [61]
        for table in ("health_samples", "health_workouts"):
            assert (
                conn.execute(sa_text(f"SELECT count(*) FROM {table} WHERE created_at IS NULL")).scalar() == 0
            )
        assert conn.execute(sa_text("SELECT skipped FROM import_jobs")).scalar() in ("[]", [])
    migrate.downgrade(empty_db, "0003")
    with empty_db.engine.connect() as conn:
        assert conn.execute(sa_text("SELECT count(*) FROM health_samples")).scalar() == 1


def test_0006_down_and_up_keeps_every_account_and_its_rows(empty_db: Database) -> None:
    """0006 adds and drops a column of `users`, which every table refers to with ON DELETE CASCADE: on
    SQLite a batch copy of the table would delete all rows on the way down. Nothing may go."""
    migrate.upgrade(empty_db, "0006")
    with empty_db.engine.begin() as conn:
        conn.execute(sa_text("INSERT INTO users (id, name, created_at) VALUES (1, 'ana', :t)"), {"t": OLD})
        conn.execute(
            sa_text(
                "INSERT INTO health_samples (user_id, kind, started_at, ended_at, bpm, source, created_at) "
                "VALUES (1, 'heart_rate', :t, :t, 61, 'Watch', :t)"
            ),
            {"t": OLD},
        )
    migrate.downgrade(empty_db, "0005")
    migrate.upgrade(empty_db)
    with empty_db.engine.connect() as conn:
        assert conn.execute(sa_text("SELECT name, deletion_requested_at FROM users")).all() == [("ana", None)]
        assert conn.execute(sa_text("SELECT bpm FROM health_samples")).scalars().all() == [61]


def test_0008_keeps_every_reading_and_summary_and_its_way_down_keeps_what_the_old_schema_holds(
    empty_db: Database,
) -> None:
    """Up: readings stored before issue 19 keep their rate, get no confidence and no reason, and their
    summaries are unchanged, with nothing left out. Down: a reading without a rate cannot be held by the
    old schema and goes; the confidences go, so the summaries are rebuilt with every rate counted."""
    migrate.upgrade(empty_db, "0007")
    workout_uuid = uuid.uuid4().hex if empty_db.engine.dialect.name == "sqlite" else str(uuid.uuid4())
    with empty_db.engine.begin() as conn:
        conn.execute(sa_text("INSERT INTO users (id, name, created_at) VALUES (1, 'ana', :t)"), {"t": OLD})
        conn.execute(
            sa_text(
                "INSERT INTO workouts (id, uuid, user_id, started_at, utc_offset_min, local_date, activity, "
                "environment, model_version, created_at, updated_at) VALUES (1, :u, 1, :t, 0, :d, 'running', "
                "'indoor', 'm1', :t, :t)"
            ),
            {"u": workout_uuid, "t": OLD, "d": OLD.date()},
        )
        conn.execute(
            sa_text(
                "INSERT INTO stages (id, workout_id, stage, started_at, duration_s) VALUES (1, 1, 1, :t, 60)"
            ),
            {"t": OLD},
        )
        for start_s, rr_bpm in ((0, 12.0), (5, 20.0), (10, 14.0)):
            conn.execute(
                sa_text("INSERT INTO segments (stage_id, start_s, duration_s, rr_bpm) VALUES (1, :s, 5, :r)"),
                {"s": start_s, "r": rr_bpm},
            )
        conn.execute(
            sa_text(
                "INSERT INTO stage_summaries (workout_id, stage, user_id, segment_count, rr_median_bpm, "
                "classified_count, heavy_count) VALUES (1, 1, 1, 3, 14.0, 0, 0)"
            )
        )
    migrate.upgrade(empty_db)
    summary = "SELECT segment_count, rr_median_bpm, {} FROM stage_summaries"
    with empty_db.engine.begin() as conn:
        rows = conn.execute(sa_text("SELECT rr_bpm, rr_confidence, reason FROM segments ORDER BY start_s"))
        assert rows.all() == [(12.0, None, None), (20.0, None, None), (14.0, None, None)]
        counts = "no_rate_count, low_confidence_count"
        assert conn.execute(sa_text(summary.format(counts))).all() == [(3, 14.0, 0, 0)]
        # what the service would store for a low-confidence rate and a reading without one
        conn.execute(sa_text("UPDATE segments SET rr_confidence = 0.1 WHERE start_s = 0"))
        conn.execute(
            sa_text(
                "INSERT INTO segments (stage_id, start_s, duration_s, rr_bpm, rr_confidence, reason) "
                "VALUES (1, 15, 5, NULL, 0.05, 'too_noisy')"
            )
        )
        conn.execute(
            sa_text(
                "UPDATE stage_summaries SET segment_count = 4, rr_median_bpm = 17.0, no_rate_count = 1, "
                "low_confidence_count = 1"
            )
        )
    migrate.downgrade(empty_db, "0007")
    with empty_db.engine.connect() as conn:
        assert conn.execute(sa_text("SELECT rr_bpm FROM segments ORDER BY start_s")).scalars().all() == [
            12.0,
            20.0,
            14.0,
        ]
        # rebuilt by the old rule: every rate counts again
        assert conn.execute(sa_text(summary.format("classified_count"))).all() == [(3, 14.0, 0)]
    migrate.upgrade(empty_db)
