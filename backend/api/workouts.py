"""Workout endpoints: PUT/GET/DELETE one workout, list them, and append segments or pulse readings."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, url_for

from backend import workouts as store
from backend.api.auth import current_principal
from backend.api.openapi import operation
from backend.db import get_session, transactional
from backend.idempotency import run_idempotent
from backend.schemas import (
    PulseAppend,
    PulseAppendResult,
    SegmentAppend,
    SegmentAppendResult,
    StagePath,
    WorkoutIn,
    WorkoutListQuery,
    WorkoutOut,
    WorkoutPage,
    WorkoutPath,
)

bp = Blueprint("workouts", __name__)
TAGS = ("workouts",)


@bp.put("/workouts/<workout_id>")
@operation(
    "Create or replace a workout",
    description="The client chooses the id (a UUID). The body replaces everything stored for it.",
    tags=TAGS,
    path=WorkoutPath,
    body=WorkoutIn,
    responses={200: ("Replaced", WorkoutOut), 201: ("Created", WorkoutOut)},
)
@transactional
def put_workout(path: WorkoutPath, body: WorkoutIn) -> tuple[dict[str, Any], int, dict[str, str]]:
    session, caller = get_session(), current_principal()
    device = caller.label
    stored, created = store.put_workout(session, caller.user_id, path.workout_id, body, default_device=device)
    # Answer with the stored form (segments in time order), exactly as a later GET will, without re-reading.
    location = url_for(".get_workout", workout_id=str(path.workout_id))
    return store.stored_workout_json(stored, body), 201 if created else 200, {"Location": location}


@bp.get("/workouts/<workout_id>")
@operation("Get a workout", tags=TAGS, path=WorkoutPath, responses={200: ("The workout", WorkoutOut)})
def get_workout(path: WorkoutPath) -> dict[str, Any]:
    user_id = current_principal().user_id
    workout = store.get_workout_or_404(get_session(), user_id, path.workout_id, children=True)
    return store.workout_json(workout)


@bp.delete("/workouts/<workout_id>")
@operation("Delete a workout", tags=TAGS, path=WorkoutPath, responses={204: ("Deleted", None)})
@transactional
def delete_workout(path: WorkoutPath) -> tuple[str, int]:
    store.delete_workout(get_session(), current_principal().user_id, path.workout_id)
    return "", 204


@bp.get("/workouts")
@operation(
    "List workouts, newest first",
    description="Cursor pagination: pass `next_cursor` as `cursor` with the same filters for the next page.",
    tags=TAGS,
    query=WorkoutListQuery,
    responses={200: ("A page of workouts", WorkoutPage)},
)
def list_workouts(query: WorkoutListQuery) -> dict[str, Any]:
    return store.list_workouts(get_session(), current_principal().user_id, query)


@bp.post("/workouts/<workout_id>/stages/<stage>/segments")
@operation(
    "Append RR segments to a stage",
    description="Creates the stage when it is new (then `started_at` is required). Safe to retry with an "
    "Idempotency-Key; a segment start already stored in the stage answers 409.",
    tags=TAGS,
    path=StagePath,
    body=SegmentAppend,
    idempotent=True,
    responses={201: ("Appended", SegmentAppendResult)},
)
@transactional
def append_segments(path: StagePath, body: SegmentAppend) -> Response:
    session, user_id = get_session(), current_principal().user_id
    workout = store.get_workout_or_404(session, user_id, path.workout_id, lock=True)
    return run_idempotent(
        session, user_id, body, lambda: (201, store.append_segments(session, workout, path.stage, body))
    )


@bp.post("/workouts/<workout_id>/pulse")
@operation(
    "Append pulse readings",
    description="One reading per protocol point; a point already stored answers 409. Safe to retry with an "
    "Idempotency-Key.",
    tags=TAGS,
    path=WorkoutPath,
    body=PulseAppend,
    idempotent=True,
    responses={201: ("Appended", PulseAppendResult)},
)
@transactional
def append_pulse(path: WorkoutPath, body: PulseAppend) -> Response:
    session, user_id = get_session(), current_principal().user_id
    workout = store.get_workout_or_404(session, user_id, path.workout_id, lock=True)
    return run_idempotent(session, user_id, body, lambda: (201, store.append_pulse(session, workout, body)))
