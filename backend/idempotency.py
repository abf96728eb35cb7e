"""Idempotency-Key for appends: a retried request replays the first answer instead of appending again.

The record is claimed (INSERT ... ON CONFLICT DO NOTHING) before the work and filled with the answer
after it, all in the request's one transaction. Two identical requests at once therefore meet on the
unique (user_id, key): on PostgreSQL the second INSERT waits for the first transaction and then inserts
nothing, on SQLite the second transaction waits at BEGIN IMMEDIATE; either way the second finds the
committed record and replays it. Exactly one append is stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from flask import Response, request
from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.db import insert_ignoring_duplicates, table_of, utcnow
from backend.models import IdempotencyRecord
from backend.problems import IDEMPOTENCY_KEY_REUSED, FieldError, ProblemError

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def fingerprint(body: BaseModel) -> str:
    """Same method, path and *meaning* of body -> same fingerprint (key order and spacing do not count)."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{request.method} {request.path}\n{canonical}".encode()).hexdigest()


def request_key() -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise ProblemError.invalid(
            [FieldError((HEADER,), f"must be 1-{MAX_KEY_LENGTH} printable ASCII characters", "header")],
            "Invalid header",
        )
    return key


def run_idempotent(
    session: Session, user_id: int, body: BaseModel, action: Callable[[], tuple[int, dict[str, Any]]]
) -> Response:
    """Run `action` (returning status and JSON) at most once per Idempotency-Key of this user."""
    key = request_key()
    if key is None:
        status, payload = action()
        return _json(payload, status)
    digest = fingerprint(body)
    # Claim the key: one round trip when it is new. A concurrent claim of the same key makes this wait for
    # that transaction (PostgreSQL) or never overlaps it (SQLite's BEGIN IMMEDIATE); either way, when the
    # other one committed, nothing is inserted and its record is read and replayed below.
    claim = insert_ignoring_duplicates(session, table_of(IdempotencyRecord)).values(
        user_id=user_id, key=key, fingerprint=digest, created_at=utcnow()
    )
    record_id = session.execute(claim.returning(IdempotencyRecord.id)).scalar_one_or_none()
    if record_id is None:
        return _replay(session, user_id, key, digest)
    status, payload = action()
    session.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.id == record_id)
        .values(response_status=status, response_body=payload)
    )
    return _json(payload, status)


def _replay(session: Session, user_id: int, key: str, digest: str) -> Response:
    stored = session.execute(
        select(
            IdempotencyRecord.fingerprint, IdempotencyRecord.response_status, IdempotencyRecord.response_body
        ).where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
    ).one()
    if stored.fingerprint != digest:
        raise ProblemError(
            422,
            "Idempotency-Key reused",
            f"{HEADER} {key!r} was already used for a different request; use a new key for new data.",
            IDEMPOTENCY_KEY_REUSED,
            [FieldError((HEADER,), "already used with a different body", "header")],
        )
    response = _json(stored.response_body, stored.response_status or 200)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _json(payload: Any, status: int) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")
