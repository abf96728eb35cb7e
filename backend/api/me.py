"""The caller's account: GET /api/v1/me (who and how much), DELETE /api/v1/me (everything, gone).

Deleting the user row removes every row of the user: every table refers to users (directly or through
workouts and stages) with ON DELETE CASCADE, so the database deletes it all in the one transaction. A
large account on a server with a task queue is locked out in the request and deleted in batches by a
queue worker (backend.accounts). Uploads still waiting for an import of this user, and export files
written for it, are deleted from disk.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, current_app
from pydantic import BaseModel
from sqlalchemy import func, select

from backend import accounts, tasks
from backend.api.auth import current_principal
from backend.api.openapi import operation
from backend.db import get_session, transactional
from backend.exports import jobs as export_jobs
from backend.imports.jobs import ImportSettings, upload_path
from backend.models import (
    ApiToken,
    FitnessMarker,
    HealthSample,
    HealthWorkout,
    ImportJob,
    User,
    Workout,
)
from backend.problems import ProblemError

bp = Blueprint("me", __name__)
TAGS = ("account",)


class Me(BaseModel):
    name: str
    created_at: datetime
    dashboard_login: bool
    devices: int
    workouts: int
    health_samples: int
    health_workouts: int
    fitness_markers: int
    imports: int


def _count(model: Any, user_id: int) -> int:
    return get_session().scalar(select(func.count()).select_from(model).where(model.user_id == user_id)) or 0


@bp.get("/me")
@operation("The caller's account and how much it holds", tags=TAGS, responses={200: ("The account", Me)})
def get_me() -> dict[str, Any]:
    user_id = current_principal().user_id
    user = get_session().get(User, user_id)
    if user is None:
        raise ProblemError(404, "Not Found", "This account no longer exists.")
    live_tokens = select(func.count()).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
    me = Me(
        name=user.name,
        created_at=user.created_at,
        dashboard_login=user.password_hash is not None,
        devices=get_session().scalar(live_tokens) or 0,
        workouts=_count(Workout, user_id),
        health_samples=_count(HealthSample, user_id),
        health_workouts=_count(HealthWorkout, user_id),
        fitness_markers=_count(FitnessMarker, user_id),
        imports=_count(ImportJob, user_id),
    )
    return me.model_dump(mode="json")


@bp.delete("/me")
@operation(
    "Delete the caller's account and all its data",
    description="Removes the user and every row that belongs to them (tokens, workouts, stages, segments, "
    "pulse readings, samples, imports, exports, idempotency records), for good. The token used stops "
    "working at once. 204: deleted. 202 (a large account, on a server with a task queue): every token "
    "is revoked and every dashboard session ended now, and the data is deleted in the background. "
    "Export first (GET /api/v1/export?format=json) to keep a copy.",
    tags=TAGS,
    responses={204: ("Deleted", None), 202: ("Locked out now; the data is being deleted", None)},
)
@transactional
def delete_me() -> tuple[str, int]:
    session, user_id = get_session(), current_principal().user_id
    waiting = accounts.waiting_imports(session, user_id)
    exports = export_jobs.files_of(export_jobs.export_dir(current_app), session, user_id)
    large = accounts.record_count(session, user_id) > int(current_app.config["ACCOUNT_INLINE_MAX_RECORDS"])
    if large and tasks.queue_of(current_app) is not None:
        accounts.lock_out(session, user_id)
        tasks.submit_account_deletion(current_app, user_id)  # waits for this transaction's commit
        status = 202
    else:
        accounts.delete_now(session, user_id)
        status = 204
    session.flush()
    settings = ImportSettings.from_app(current_app)
    for job_uuid in waiting:  # a running import notices its job is gone and stops
        upload_path(settings, job_uuid).unlink(missing_ok=True)
    for file in exports:  # export files written for the account (backend.exports.jobs)
        file.unlink(missing_ok=True)
    return "", status
