"""Fault injection for tests/backend/test_faults.py, installed by the test's own means (an engine event).

The hold: when a file ``hold`` is in the folder, the first write transaction that inserted rows to reach
COMMIT (its rows written, not yet committed) renames it to ``held-<pid>`` and waits until that file is
gone, so the test can kill this worker at exactly that point instead of guessing with sleeps. Bounded: it
waits 60 s at most. Production code knows nothing of it: it is a SQLAlchemy ``commit`` listener on the
app's engine, added by :func:`create_app`, the factory the test hands gunicorn for ``backend:create_app()``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import Connection, Engine, event

import backend
from backend.db import EXTENSION_KEY, WRITE_OPTION

HOLD_DIR_ENV = "TEST_HOLD_BEFORE_COMMIT"  # the folder of the hold file; no hold when unset
_INSERTED = "respira_test_inserted"  # in Connection.info: this transaction has run an INSERT


def install_hold_before_commit(engine: Engine, folder: Path, max_wait_s: float = 60.0) -> None:
    """Make the engine's write transactions that inserted rows stop before COMMIT while ``folder/hold`` is
    there to be taken (an UPDATE-only transaction, such as a token's last-used touch, passes)."""

    @event.listens_for(engine, "before_cursor_execute")
    def _note_insert(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip()[:6].upper() == "INSERT":
            conn.info[_INSERTED] = True

    @event.listens_for(engine, "rollback")
    def _forget(conn: Connection) -> None:
        conn.info.pop(_INSERTED, None)

    @event.listens_for(engine, "commit")
    def _hold(conn: Connection) -> None:  # runs just before the DBAPI commit, after the last flush
        inserted = conn.info.pop(_INSERTED, False)
        if not (inserted and conn.get_execution_options().get(WRITE_OPTION, False)):
            return  # a read, or a write that added no rows: not the upload under test
        held = folder / f"held-{os.getpid()}"
        try:
            os.rename(folder / "hold", held)  # atomic: one transaction takes the hold
        except FileNotFoundError:
            return
        deadline = time.monotonic() + max_wait_s
        while held.exists() and time.monotonic() < deadline:
            time.sleep(0.01)


def create_app() -> Flask:
    """The production app, plus the hold when ``TEST_HOLD_BEFORE_COMMIT`` names a folder.

    For gunicorn: ``gunicorn -c gunicorn.conf.py 'tests.support.faults:create_app()'`` from the repository
    root (gunicorn puts its working directory on ``sys.path``).
    """
    app = backend.create_app()
    folder = os.environ.get(HOLD_DIR_ENV)
    if folder:
        install_hold_before_commit(app.extensions[EXTENSION_KEY].engine, Path(folder))
    return app
