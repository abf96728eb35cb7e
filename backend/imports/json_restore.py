"""Re-importing a JSON export (`GET /api/v1/export?format=json`) into the caller's account.

Portability: the document restores everything it holds, into any user (a new account, another server).
Workouts are created or replaced by id, exactly as `PUT /api/v1/workouts/<id>` does (ids are per user,
so importing someone's export never touches their workouts); samples, fitness markers and health-app
workouts already stored are skipped. So importing the same document twice changes nothing. Links between
samples and workouts are restored as the document states them. One transaction: a document with any
invalid part is refused with 422 naming the field, and nothing is stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.exports.schemas import RespiraExport
from backend.imports.records import (
    HEART_RATE,
    MARKERS,
    RESPIRATORY_RATE,
    HealthWorkoutIn,
    MarkerIn,
    SampleIn,
    marker_problem,
    sample_problem,
    store_health_workouts,
    store_markers,
    store_samples,
)
from backend.models import Workout
from backend.problems import FieldError, ProblemError
from backend.schemas import WorkoutIn
from backend.workouts import put_workout


def _workout_ids(
    session: Session, user_id: int, wanted: set[uuid.UUID], restored: dict[uuid.UUID, int]
) -> dict[uuid.UUID, int]:
    """Database ids of the workouts samples point to: restored now, or already stored for this user."""
    missing = wanted - restored.keys()
    stored = {}
    if missing:
        rows = session.execute(
            select(Workout.uuid, Workout.id).where(Workout.user_id == user_id, Workout.uuid.in_(missing))
        )
        stored = {row.uuid: row.id for row in rows}
    return {**stored, **restored}


Linker = Callable[[uuid.UUID | None, tuple[str | int, ...]], int | None]


def _put_workouts(
    session: Session, user_id: int, document: RespiraExport
) -> tuple[dict[uuid.UUID, int], int]:
    """Create or replace the document's workouts; (database id by workout UUID, how many were new)."""
    restored: dict[uuid.UUID, int] = {}
    created = 0
    for i, exported in enumerate(document.workouts):
        body = WorkoutIn.model_validate(exported.model_dump(exclude={"id"}))
        try:
            workout, is_new = put_workout(session, user_id, exported.id, body, default_device=None)
        except ProblemError as exc:
            raise ProblemError.invalid(
                [FieldError(("workouts", i, *e.loc), e.detail) for e in exc.errors], "Invalid export document"
            ) from None
        restored[exported.id] = workout.id
        created += is_new
    return restored, created


def _samples(
    document: RespiraExport, link: Linker, errors: list[FieldError]
) -> tuple[list[SampleIn], list[int | None]]:
    samples, links = [], []
    for j, s in enumerate(document.health_samples):
        loc = ("health_samples", j)
        if s.ended_at < s.started_at:
            errors.append(FieldError((*loc, "ended_at"), "the sample ends before it starts"))
        if problem := sample_problem(s.kind.value, s.bpm):
            errors.append(FieldError((*loc, "bpm"), problem))
        samples.append(
            SampleIn(s.kind.value, s.started_at, s.ended_at, s.bpm, s.source, s.bpm_min, s.bpm_max)
        )
        links.append(link(s.workout_id, (*loc, "workout_id")))
    return samples, links


def _health_workouts(
    document: RespiraExport, link: Linker, errors: list[FieldError]
) -> tuple[list[HealthWorkoutIn], list[int | None]]:
    health_workouts, links = [], []
    for k, w in enumerate(document.health_workouts):
        loc = ("health_workouts", k)
        if w.ended_at < w.started_at:
            errors.append(FieldError((*loc, "ended_at"), "the workout ends before it starts"))
        health_workouts.append(
            HealthWorkoutIn(
                w.source,
                w.activity_type,
                w.started_at,
                w.ended_at,
                w.indoor,
                w.hr_avg_bpm,
                w.hr_min_bpm,
                w.hr_max_bpm,
            )
        )
        links.append(link(w.workout_id, (*loc, "workout_id")))
    return health_workouts, links


def _markers(document: RespiraExport, errors: list[FieldError]) -> list[MarkerIn]:
    markers = []
    for m_index, m in enumerate(document.fitness_markers):
        loc = ("fitness_markers", m_index)
        if m.ended_at < m.started_at:
            errors.append(FieldError((*loc, "ended_at"), "the marker ends before it starts"))
        if problem := marker_problem(m.kind.value, m.value):
            errors.append(FieldError((*loc, "value"), problem))
        markers.append(MarkerIn(m.kind.value, m.started_at, m.ended_at, m.value, m.source, m.local_date))
    return markers


def restore(session: Session, user_id: int, document: RespiraExport) -> tuple[dict[str, int], list[str]]:
    """Store the document for `user_id` (in the caller's transaction); returns job counts and warnings."""
    errors: list[FieldError] = []
    restored, created = _put_workouts(session, user_id, document)
    links = {s.workout_id for s in document.health_samples} | {w.workout_id for w in document.health_workouts}
    ids = _workout_ids(session, user_id, {link for link in links if link is not None}, restored)

    def link(workout_uuid: uuid.UUID | None, loc: tuple[str | int, ...]) -> int | None:
        if workout_uuid is None:
            return None
        if workout_uuid not in ids:
            errors.append(FieldError(loc, f"no workout {workout_uuid} in this document or stored for you"))
        return ids.get(workout_uuid)

    samples, sample_links = _samples(document, link, errors)
    health_workouts, workout_links = _health_workouts(document, link, errors)
    markers = _markers(document, errors)
    if errors:
        raise ProblemError.invalid(errors[:50], "Invalid export document")

    added = store_samples(session, user_id, samples, sample_links)
    added_markers = store_markers(session, user_id, markers)
    counts = {
        "workouts_created": created,
        "workouts_replaced": len(document.workouts) - created,
        "heart_rate_read": sum(s.kind == HEART_RATE for s in samples),
        "heart_rate_added": added.get(HEART_RATE, 0),
        "respiratory_rate_read": sum(s.kind == RESPIRATORY_RATE for s in samples),
        "respiratory_rate_added": added.get(RESPIRATORY_RATE, 0),
        "health_workouts_read": len(health_workouts),
        "health_workouts_added": store_health_workouts(session, user_id, health_workouts, workout_links),
    }
    for kind in MARKERS:
        counts[f"{kind}_read"] = sum(m.kind == kind for m in markers)
        counts[f"{kind}_added"] = added_markers.get(kind, 0)
    return counts, []
