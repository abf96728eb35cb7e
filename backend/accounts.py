"""Deleting an account: at once, in the request, or in batches on the task queue for a large account.

Why two ways: every row of an account goes with its user row (ON DELETE CASCADE), so a small account is
deleted by one statement in the request's transaction. An account with years of history holds millions
of rows (76 segments per workout, Apple Health samples); deleting them in one transaction would hold a
web worker, and locks, for minutes. So, when a task queue is configured (backend.tasks) and the account
holds more than ACCOUNT_INLINE_MAX_RECORDS workouts and samples, the request only *locks the account
out* and a queue worker deletes the rest:

1. in the request's transaction (`lock_out`): the user row is marked (`deletion_requested_at`), every
   device token revoked, every dashboard session ended and the password removed, so nobody can read or
   write the account any more from the moment the request answers (202);
2. on a queue worker (`delete_in_batches`): workouts (with their stages, segments, pulse and summaries)
   and samples are deleted a batch per transaction, then the user row with whatever is left.

The task is queued before the request commits; it starts by locking the user row (PostgreSQL: FOR
UPDATE; SQLite: BEGIN IMMEDIATE), so it waits for that commit, and does nothing if the mark is not there
(the request rolled back). Each batch commits on its own, so a worker that dies mid-way leaves a smaller
account, still locked out and marked: the task runs again (RQ retries) or a starting worker queues it
again (`marked_for_deletion`), and carries on where it stopped.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from backend.db import Database, rowcount, utcnow
from backend.imports.jobs import ACTIVE
from backend.models import ApiToken, AuthFailure, HealthSample, ImportJob, User, WebSession, Workout
from backend.ratelimit import account_bucket

# Rows deleted per transaction: a workout takes ~90 rows with it (stages, segments, pulse, summaries).
BATCHES: tuple[tuple[Any, int], ...] = ((Workout, 200), (HealthSample, 20_000))


def record_count(session: Session, user_id: int) -> int:
    """Workouts plus health samples: what makes an account large (both counted by a user_id index)."""
    return sum(
        session.scalar(select(func.count()).select_from(model).where(model.user_id == user_id)) or 0
        for model in (Workout, HealthSample)
    )


def waiting_imports(session: Session, user_id: int) -> list[uuid.UUID]:
    """Import jobs of the user not finished yet: their uploads are deleted with the account."""
    query = select(ImportJob.uuid).where(ImportJob.user_id == user_id, ImportJob.status.in_(ACTIVE))
    return list(session.scalars(query))


def delete_now(session: Session, user_id: int) -> None:
    """Delete the user row, and with it every row of the account (ON DELETE CASCADE)."""
    name = session.scalar(select(User.name).where(User.id == user_id))
    session.execute(delete(User).where(User.id == user_id))  # web sessions go with it (cascade)
    if name is not None:  # failed log-ins counted against the name (not a row of the user's)
        session.execute(delete(AuthFailure).where(AuthFailure.bucket == account_bucket(name)))


def lock_out(session: Session, user_id: int) -> None:
    """Mark the account for deletion and close every way in: tokens, dashboard sessions, password."""
    now = utcnow()
    session.execute(
        update(User).where(User.id == user_id).values(deletion_requested_at=now, password_hash=None)
    )
    live = update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
    session.execute(live.values(revoked_at=now))
    session.execute(delete(WebSession).where(WebSession.user_id == user_id))


def delete_in_batches(db: Database, user_id: int) -> bool:
    """Delete a marked account a batch per transaction; False when it is not (or no longer) marked."""
    while True:
        with db.session(write=True) as session, session.begin():
            marked = session.scalar(
                select(User.deletion_requested_at).where(User.id == user_id).with_for_update()
            )
            if marked is None:  # gone already, or the request that marked it rolled back
                return False
            for model, batch in BATCHES:
                ids = select(model.id).where(model.user_id == user_id).limit(batch).scalar_subquery()
                if rowcount(session.execute(delete(model).where(model.id.in_(ids)))):
                    break  # this batch is committed; the next transaction takes the next one
            else:
                delete_now(session, user_id)
                return True


def marked_for_deletion(db: Database) -> list[int]:
    """Users whose deletion was requested and is not finished (their task may have been lost)."""
    with db.session() as session:
        return list(session.scalars(select(User.id).where(User.deletion_requested_at.is_not(None))))
