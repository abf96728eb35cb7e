"""Dashboard sessions kept on the server (table `web_sessions`), so that they can really end.

The signed cookie carries only a random key (Flask-Login's user id is that key); the row it names is
the session. A session ends when:

- its person logs out (the row is deleted: a copy of the cookie opens nothing any more),
- it was idle longer than `PERMANENT_SESSION_LIFETIME` (last visit; written at most once a minute),
- it is older than `SESSION_ABSOLUTE_LIFETIME_S`, however active (a stolen cookie cannot be kept alive),
- the password changes (`users set-password` deletes the rows; a password changed any other way no
  longer matches the fingerprint kept in the row),
- its person presses "Log out other sessions" on another one.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from backend.clock import now
from backend.db import get_db, rowcount
from backend.models import User, WebSession

TOUCH_INTERVAL = timedelta(seconds=60)  # last_seen_at is written at most this often per session


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def password_fingerprint(password_hash: str) -> str:
    """A short digest of the stored hash: changes whenever the password does, reveals nothing of it."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def lifetimes() -> tuple[timedelta, timedelta]:
    """(idle, absolute) lifetimes of a session, from the app's settings."""
    idle = current_app.permanent_session_lifetime
    absolute = timedelta(seconds=float(current_app.config["SESSION_ABSOLUTE_LIFETIME_S"]))
    return idle, absolute


def _expired(row: WebSession, moment: datetime) -> bool:
    idle, absolute = lifetimes()
    return moment - row.last_seen_at > idle or moment - row.created_at > absolute


def start_web_session(session: Session, user: User) -> str:
    """A new session for `user` (in the caller's transaction); returns the key for the cookie."""
    moment = now()
    idle, absolute = lifetimes()
    # Housekeeping: the user's own sessions that have expired go now.
    session.execute(
        delete(WebSession).where(
            WebSession.user_id == user.id,
            or_(WebSession.last_seen_at < moment - idle, WebSession.created_at < moment - absolute),
        )
    )
    key = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            user_id=user.id,
            key_hash=_hash(key),
            password_fingerprint=password_fingerprint(user.password_hash or ""),
            created_at=moment,
            last_seen_at=moment,
        )
    )
    session.flush()
    return key


@dataclass(frozen=True)
class LiveSession:
    user_id: int
    name: str


class SessionExpired(Exception):
    """The key named a session that has outlived its idle or absolute lifetime (it is deleted now)."""


def load_web_session(session: Session, key: str) -> LiveSession | None:
    """The live session with this key, or None (no such session, or its password changed).

    Raises SessionExpired for one past its lifetime, so the login page can say so. Records the visit
    (at most once per TOUCH_INTERVAL) in its own short transaction, as tokens do.
    """
    found = session.execute(
        select(WebSession, User)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.key_hash == _hash(key))
    ).first()
    if found is None:
        return None
    row, user = found
    moment = now()
    if _expired(row, moment):
        end_web_session(key)
        raise SessionExpired
    if not user.password_hash or password_fingerprint(user.password_hash) != row.password_fingerprint:
        return None
    if moment - row.last_seen_at >= TOUCH_INTERVAL:
        with get_db().session(write=True) as writer, writer.begin():
            writer.execute(update(WebSession).where(WebSession.id == row.id).values(last_seen_at=moment))
    return LiveSession(user.id, user.name)


def end_web_session(key: str) -> None:
    with get_db().session(write=True) as writer, writer.begin():
        writer.execute(delete(WebSession).where(WebSession.key_hash == _hash(key)))


def end_web_sessions(session: Session, user_id: int, *, except_key: str | None = None) -> int:
    """End every session of the user (but `except_key`'s), in the caller's transaction; how many ended."""
    query = delete(WebSession).where(WebSession.user_id == user_id)
    if except_key is not None:
        query = query.where(WebSession.key_hash != _hash(except_key))
    return rowcount(session.execute(query))
