"""Helpers shared by the backend tests (imported as `api_helpers`; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete

from backend.db import EXTENSION_KEY, Base, Database
from backend.models import User
from backend.tokens import issue_token
from tests.support.scratch_db import scratch_postgres_database

PG_ENV = "TEST_DATABASE_URL"


def fresh_postgres_database(server_url: str):
    """A fresh database for one test run (see tests.support.scratch_db)."""
    return scratch_postgres_database(server_url, prefix="respira_test")


@contextmanager
def empty_database(kind: str, directory: Path) -> Iterator[str]:
    """A URL to a database with no tables at all, of the given kind."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / f'respira-{uuid.uuid4().hex[:8]}.sqlite3'}"
        return
    server = os.environ.get(PG_ENV)
    if not server:
        pytest.skip(f"{PG_ENV} is not set")
    with fresh_postgres_database(server) as url:
        yield url


def app_config(database_url: str, **extra: Any) -> dict[str, Any]:
    return {"TESTING": True, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", **extra}


def wipe(db: Database) -> None:
    with db.session(write=True) as session, session.begin():
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(delete(table))


def make_user(app: Flask, name: str, label: str | None = "test-device") -> tuple[int, str]:
    """Create a user with one device token; returns (user id, token)."""
    db: Database = app.extensions[EXTENSION_KEY]
    with db.session(write=True) as session, session.begin():
        user = User(name=name)
        session.add(user)
        _, token = issue_token(session, user, label)
        return user.id, token


class Api:
    """A test client that sends one user's bearer token and JSON bodies."""

    def __init__(self, app: Flask, token: str, user_id: int) -> None:
        self.app, self.token, self.user_id = app, token, user_id
        self.client: FlaskClient = app.test_client()

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None, **kw: Any) -> Any:
        return self.client.open(url, method=method, headers=self.headers(headers), **kw)

    def get(self, url: str, **kw: Any) -> Any:
        return self.request("GET", url, **kw)

    def put(self, url: str, **kw: Any) -> Any:
        return self.request("PUT", url, **kw)

    def post(self, url: str, **kw: Any) -> Any:
        return self.request("POST", url, **kw)

    def delete(self, url: str, **kw: Any) -> Any:
        return self.request("DELETE", url, **kw)


def workout_url(workout_id: uuid.UUID | str) -> str:
    return f"/api/v1/workouts/{workout_id}"


def sample_workout(**overrides: Any) -> dict[str, Any]:
    """The issue's example workout, filled out: two stages and three pulse points."""
    body: dict[str, Any] = {
        "started_at": "2026-11-21T07:30:00-08:00",
        "activity": "running",
        "environment": "outdoor",
        "model_version": "tclstm-2026.11",
        "stages": [
            {
                "stage": 1,
                "started_at": "2026-11-21T07:30:00-08:00",
                "segments": [
                    {
                        "start_s": 0.0,
                        "duration_s": 6.0,
                        "rr_bpm": 14.2,
                        "respiration_count": 1.4,
                        "breath_class": "normal",
                        "breath_probs": [0.05, 0.9, 0.05],
                        "noise_prob": 0.1,
                    },
                    {
                        "start_s": 6.0,
                        "duration_s": 6.0,
                        "rr_bpm": 15.0,
                        "respiration_count": 1.5,
                        "breath_class": "normal",
                        "breath_probs": [0.1, 0.8, 0.1],
                        "noise_prob": 0.2,
                    },
                ],
            },
            {
                "stage": 2,
                "started_at": "2026-11-21T07:52:00-08:00",
                "segments": [
                    {
                        "start_s": 54.0,
                        "duration_s": 6.0,
                        "rr_bpm": 38.5,
                        "respiration_count": 3.85,
                        "breath_class": "heavy",
                        "breath_probs": [0.0, 0.1, 0.9],
                        "noise_prob": 0.3,
                    },
                ],
            },
        ],
        "pulse": [
            {"point": "before_1", "bpm": 68, "measured_at": "2026-11-21T07:29:30-08:00"},
            {"point": "before_2", "bpm": 152, "measured_at": "2026-11-21T07:51:50-08:00"},
            {"point": "before_3", "bpm": 160, "measured_at": "2026-11-21T07:53:05-08:00"},
        ],
    }
    body.update(overrides)
    return body
