"""Alembic, driven from the app: `flask --app backend db upgrade` and the tests use these helpers.

The app's own engine (with its SQLite settings) is handed to Alembic's env.py through
`config.attributes["connection"]`, Alembic's documented recipe for programmatic use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from backend.db import WRITE_OPTION, Database

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"


def alembic_config() -> Config:
    ini = ROOT / "alembic.ini"
    config = Config(str(ini)) if ini.exists() else Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str | None:
    if not MIGRATIONS.is_dir():
        return None
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    _run(db, command.upgrade, revision)


def downgrade(db: Database, revision: str) -> None:
    _run(db, command.downgrade, revision)


def _run(db: Database, fn: Callable[[Config, str], None], revision: str) -> None:
    config = alembic_config()
    # One write transaction for the whole run: a failed migration leaves the schema as it was
    # (PostgreSQL and SQLite both have transactional DDL).
    with db.engine.execution_options(**{WRITE_OPTION: True}).begin() as conn:
        config.attributes["connection"] = conn
        fn(config, revision)
