"""Database engine, sessions and the one-transaction-per-request rule.

Everything that talks to the database gets its `Session` from here, so the dialect quirks live in one
place: SQLite needs foreign keys switched on, a busy timeout, and write transactions that take the write
lock up front (`BEGIN IMMEDIATE`); otherwise two requests that both read and then write deadlock and one
of them fails at once with "database is locked" instead of waiting its turn.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, ParamSpec, TypeVar, cast

from flask import current_app, g
from sqlalchemy import (
    Connection,
    CursorResult,
    DateTime,
    Engine,
    Float,
    Insert,
    MetaData,
    Result,
    Table,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

EXTENSION_KEY = "respira.db"
log = logging.getLogger("respira.db")
# Execution option marking a write session's connections (SQLite then BEGINs IMMEDIATE).
WRITE_OPTION = "respira_write"

# Deterministic constraint names, so Alembic migrations can refer to (and drop) them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """An instant stored in UTC, returned as an aware UTC datetime on every database.

    PostgreSQL's timestamptz keeps the instant but not the offset; SQLite keeps neither, so without this
    a naive value would silently be read back as local time. Offsets worth keeping (a workout's local
    clock) are stored in their own column.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored: the instant is ambiguous")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def as_utc(value: datetime) -> datetime:
    """A stored instant as an aware UTC datetime (SQLite gives it naive, PostgreSQL in its time zone)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def normalize_database_url(url: str) -> str:
    """Point bare PostgreSQL URLs at psycopg 3 (SQLAlchemy's default driver, psycopg2, is not installed)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


class Database:
    """An engine plus two session factories: read sessions, and write sessions that lock up front."""

    def __init__(self, url: str, *, sqlite_busy_timeout_ms: int = 30_000, echo: bool = False) -> None:
        self.url = normalize_database_url(url)
        self.engine: Engine = create_engine(self.url, pool_pre_ping=True, echo=echo)
        if self.engine.dialect.name == "sqlite":
            _tune_sqlite(self.engine, busy_timeout_ms=sqlite_busy_timeout_ms)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self, *, write: bool = False) -> Session:
        """A new session; `write=True` for any transaction that may write (SQLite then locks at BEGIN)."""
        return (self._write if write else self._read)()

    @contextmanager
    def single_statement(self) -> Iterator[Connection]:
        """A connection for one read that needs no transaction: on PostgreSQL in autocommit mode, so the
        read is its one round trip (no BEGIN, no ROLLBACK); on SQLite, where these cost no round trip,
        an ordinary read transaction."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def _tune_sqlite(engine: Engine, *, busy_timeout_ms: int) -> None:
    """SQLAlchemy's documented recipe: let us emit BEGIN ourselves, and make it IMMEDIATE for writers."""
    in_memory = engine.url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite must not start transactions on its own
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode = WAL")  # readers never wait for the writer
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def insert_ignoring_duplicates(
    session: Session, table: Table, columns: Sequence[str] | None = None
) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING in the session's dialect (both spell it the same way);
    `columns` limits it to the unique constraint on them (any other violation still raises)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=columns)
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=columns)
    raise NotImplementedError(f"Respira needs PostgreSQL or SQLite, not {dialect}")


def table_of(model: type[Base]) -> Table:
    """The Table of a mapped class, typed as one (SQLAlchemy types ``__table__`` as any FromClause)."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a Table")
    return table


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE matched (``Session.execute`` is typed to return a plain Result, but
    for those statements it is a CursorResult, which has the count)."""
    if not isinstance(result, CursorResult):
        raise TypeError(f"no row count on a {type(result).__name__}")
    return result.rowcount


def bulk_insert(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT many rows in one go, as cheaply for the client as each database allows.

    When no column converts its values in Python (plain numbers and strings; UTC datetimes do convert)
    the rows go to the driver as they are, skipping SQLAlchemy's per-row parameter processing:
    SQLite: the driver's executemany (a C loop). PostgreSQL: one INSERT ... SELECT FROM unnest() with one
    array per column, so the statement text is the same whatever the number of rows: psycopg prepares it
    once per connection and the server plans it once, where a multi-row VALUES list would be a new
    statement for every row count (and an executemany one message per row). Other tables: executemany.
    """
    if not rows:
        return
    dialect = connection.dialect
    columns = [table.c[name] for name in rows[0]]
    # Float's processor only turns numbers into floats: done below where the driver needs it.
    plain = all(
        isinstance(c.type, Float) or c.type.dialect_impl(dialect).bind_processor(dialect) is None
        for c in columns
    )
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c.name) for c in columns)
    target = f"{dialect.identifier_preparer.format_table(table)} ({names})"
    if plain and dialect.name == "sqlite":  # REAL columns store ints as floats themselves
        marks = ", ".join("?" * len(columns))
        values = [tuple(row[c.name] for c in columns) for row in rows]
        connection.exec_driver_sql(f"INSERT INTO {target} VALUES ({marks})", values)
    elif plain and dialect.name == "postgresql":
        arrays = ", ".join(f"CAST(:{c.name} AS {c.type.compile(dialect)}[])" for c in columns)
        statement = text(f"INSERT INTO {target} SELECT * FROM unnest({arrays})")
        connection.execute(statement, {c.name: _array(c, rows) for c in columns})
    else:
        connection.execute(table.insert(), rows)


def _array(column: Any, rows: list[dict[str, Any]]) -> list[Any]:
    """One column of `rows`; floats as floats, since psycopg types a list by its first element."""
    if isinstance(column.type, Float):
        return [None if row[column.name] is None else float(row[column.name]) for row in rows]
    return [row[column.name] for row in rows]


# ---- Flask glue: one session per request -------------------------------------------------------------


def get_db() -> Database:
    return cast(Database, current_app.extensions[EXTENSION_KEY])


def get_session() -> Session:
    """The request's session (a read session unless the view is `@transactional`)."""
    if "db_session" not in g:
        g.db_session = get_db().session()
    return cast(Session, g.db_session)


def close_session(_exc: BaseException | None = None) -> None:
    """Teardown: closing rolls back whatever was not committed, so a failed request changes nothing."""
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


class ConflictError(Exception):
    """A unique constraint still failed after the retry: the request collides with stored data."""


P = ParamSpec("P")
R = TypeVar("R")


def transactional(view: Callable[P, R]) -> Callable[P, R]:
    """Run a view in one write transaction: commit when it returns, roll back when it raises.

    A unique-constraint race (two identical requests at once) is retried once from scratch: the second run
    sees the winner's committed rows and answers as a retry would (replays an Idempotency-Key, replaces a
    workout, or reports the conflict). Views must flush their writes before building the response.
    """

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(2):
            close_session()
            session = g.db_session = get_db().session(write=True)
            try:
                result = view(*args, **kwargs)
                session.commit()
                return result
            except IntegrityError as exc:
                session.rollback()
                log.info("unique constraint hit, %s: %s", "giving up" if attempt else "retrying", exc.orig)
                if attempt == 1:
                    raise ConflictError(str(exc.orig)) from exc
            except BaseException:
                session.rollback()
                raise
        raise AssertionError("unreachable")

    return wrapper
