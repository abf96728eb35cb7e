"""Fixtures for the backend tests: every API test runs on SQLite, and on PostgreSQL too when
TEST_DATABASE_URL points at a server (e.g. postgresql://postgres@127.0.0.1:5432/test).

For PostgreSQL a fresh, uniquely named database is created on that server for the run and dropped at
the end, so parallel runs never collide. Each backend's schema is built once with the Alembic migrations
(so every API test also exercises them); tables are emptied before each test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import Api, app_config, empty_database, make_user, wipe
from flask import Flask

from backend import create_app, migrate
from backend.db import EXTENSION_KEY, Database

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database of each available kind, shared by the tests of the session."""
    with empty_database(request.param, tmp_path_factory.mktemp("db")) as url:
        db = Database(url)
        migrate.upgrade(db)
        db.dispose()
        yield url


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Iterator[Flask]:
    app = create_app(app_config(database_url, EXPORT_DIR=str(tmp_path / "exports")))
    db: Database = app.extensions[EXTENSION_KEY]
    wipe(db)
    yield app
    db.dispose()


@pytest.fixture
def alice(app: Flask) -> Api:
    user_id, token = make_user(app, "alice", "Alice's iPhone")
    return Api(app, token, user_id)


@pytest.fixture
def bob(app: Flask) -> Api:
    user_id, token = make_user(app, "bob", "Bob's iPhone")
    return Api(app, token, user_id)
