"""Alembic environment: migrations run against the app's engine and compare to backend.models."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

import backend.models  # noqa: F401  (registers every table on Base.metadata)
from backend.db import Base

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs: object) -> None:
    context.configure(target_metadata=target_metadata, compare_type=True, **kwargs)


def _run(connection: Connection) -> None:
    # SQLite cannot ALTER most things; batch mode rebuilds tables for later migrations that need it.
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # called from backend.migrate (flask db ..., tests)
        _run(connection)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    from backend import create_app
    from backend.db import EXTENSION_KEY

    db = create_app().extensions[EXTENSION_KEY]
    with db.engine.execution_options(respira_write=True).connect() as conn:
        _run(conn)


def run_offline() -> None:
    """`alembic upgrade head --sql`: print the SQL for the configured database instead of running it."""
    from backend import create_app
    from backend.db import normalize_database_url

    url = normalize_database_url(create_app().config["DATABASE_URL"])
    _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
