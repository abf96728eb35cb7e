"""Device API tokens: issue (shown once), authenticate, revoke.

A token is 256 random bits, so a plain SHA-256 of it is a safe thing to store and look up (passwords,
which people choose, get a slow salted hash instead; see `User.set_password`).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from backend.db import Database, rowcount, utcnow
from backend.models import ApiToken, User

TOKEN_PREFIX = "rsp_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(session: Session, user: User, label: str | None = None) -> tuple[ApiToken, str]:
    """Create a token for `user`; returns the row and the plaintext, which is never stored."""
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user=user, label=label, token_hash=hash_token(plaintext), prefix=plaintext[:12])
    session.add(token)
    session.flush()
    return token, plaintext


def revoke_tokens(
    session: Session, user: User, *, token_id: int | None = None, label: str | None = None
) -> int:
    """Revoke the user's live tokens matching id or label (all of them when neither is given)."""
    query = update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    if token_id is not None:
        query = query.where(ApiToken.id == token_id)
    if label is not None:
        query = query.where(ApiToken.label == label)
    return rowcount(session.execute(query.values(revoked_at=utcnow())))


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user and the token (device) they called with."""

    user_id: int
    token_id: int
    label: str | None


def authenticate(db: Database, plaintext: str, *, touch_interval_s: float = 60.0) -> Principal | None:
    """The live token's principal, or None. Records last use, in its own short transaction.

    Last use is written at most once per `touch_interval_s` per token, so ordinary reads stay read-only;
    it commits apart from the request so that it is kept even when the request itself fails.
    """
    with db.single_statement() as conn:
        row = conn.execute(
            select(ApiToken.id, ApiToken.user_id, ApiToken.label, ApiToken.last_used_at).where(
                ApiToken.token_hash == hash_token(plaintext), ApiToken.revoked_at.is_(None)
            )
        ).first()
    if row is None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= timedelta(seconds=touch_interval_s):
        _touch(db, row.id, now, touch_interval_s)
    return Principal(user_id=row.user_id, token_id=row.id, label=row.label)


def _touch(db: Database, token_id: int, now: datetime, touch_interval_s: float) -> None:
    stale = now - timedelta(seconds=touch_interval_s)
    with db.session(write=True) as session, session.begin():
        session.execute(
            update(ApiToken)
            .where(
                ApiToken.id == token_id, or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= stale)
            )
            .values(last_used_at=now)
        )
