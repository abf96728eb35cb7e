"""Idempotency-Key for appends: a retried request replays the first answer instead of appending again.

The record is claimed (inserted) before the work and filled with the answer after it, all in the
request's one transaction. Two identical requests at once therefore collide on the unique
(user_id, key): on PostgreSQL the second INSERT waits for the first transaction and then fails, on SQLite
the second transaction waits at BEGIN IMMEDIATE; either way `transactional` retries it, and the retry
finds the committed record and replays it. Exactly one append is stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from flask import Response, request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

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
    stored = session.scalars(
        select(IdempotencyRecord).where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
    ).one_or_none()
    if stored is not None:
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
    record = IdempotencyRecord(user_id=user_id, key=key, fingerprint=digest)
    session.add(record)
    session.flush()  # claim the key before doing the work (see module docstring)
    status, payload = action()
    record.response_status, record.response_body = status, payload
    session.flush()
    return _json(payload, status)


def _json(payload: Any, status: int) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")
