"""A throwaway PostgreSQL database for tests and benchmarks that must not touch a shared one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from backend.db import normalize_database_url


@contextmanager
def scratch_postgres_database(server_url: str, prefix: str = "respira_scratch") -> Iterator[str]:
    """CREATE a uniquely named database on the server of ``server_url``, yield its URL, DROP it after.

    FORCE ends our own sessions still open on it, so a test that leaked a connection cannot block the DROP.
    """
    admin_url = make_url(normalize_database_url(server_url))
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
