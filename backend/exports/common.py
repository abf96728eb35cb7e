"""What every export format needs: the user's workouts in time order, a batch at a time, and the rows
imported from health apps (samples, fitness markers, health-app workouts), streamed.

`since` (an incremental export) keeps what was stored or changed at or after that instant: workouts by
`updated_at`, imported rows by `created_at`. Deletions are not reported (a full export shows them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload

from backend.domain import stage_of_point
from backend.models import FitnessMarker, HealthSample, HealthWorkout, Stage, Workout

BATCH = 100
ROW_BATCH = 5000  # imported rows fetched per round trip


def iter_workouts(
    session: Session, user_id: int, batch: int = BATCH, since: datetime | None = None
) -> Iterator[Workout]:
    """Oldest first, with stages, segments and pulse readings; keyset pages keep memory to one batch."""
    after: tuple[datetime, int] | None = None
    while True:
        query = select(Workout).where(Workout.user_id == user_id)
        if since is not None:
            query = query.where(Workout.updated_at >= since)
        if after is not None:
            query = query.where(
                or_(
                    Workout.started_at > after[0], and_(Workout.started_at == after[0], Workout.id > after[1])
                )
            )
        query = query.options(
            selectinload(Workout.stages).selectinload(Stage.segments), selectinload(Workout.pulse_readings)
        )
        page = list(session.scalars(query.order_by(Workout.started_at, Workout.id).limit(batch)))
        yield from page
        if len(page) < batch:
            return
        after = (page[-1].started_at, page[-1].id)
        session.expunge_all()  # let the finished page go


def iter_samples(
    session: Session, user_id: int, since: datetime | None = None
) -> Iterator[tuple[HealthSample, uuid.UUID | None]]:
    """Heart-rate and respiratory-rate samples by kind and time, with the id of their workout."""
    query = (
        select(HealthSample, Workout.uuid)
        .outerjoin(Workout, Workout.id == HealthSample.workout_id)
        .where(HealthSample.user_id == user_id)
    )
    if since is not None:
        query = query.where(HealthSample.created_at >= since)
    rows = session.execute(
        query.order_by(HealthSample.kind, HealthSample.started_at, HealthSample.source).execution_options(
            yield_per=ROW_BATCH
        )
    )
    yield from rows


def iter_markers(session: Session, user_id: int, since: datetime | None = None) -> Iterator[FitnessMarker]:
    """Fitness markers by kind and time."""
    query = select(FitnessMarker).where(FitnessMarker.user_id == user_id)
    if since is not None:
        query = query.where(FitnessMarker.created_at >= since)
    yield from session.scalars(
        query.order_by(FitnessMarker.kind, FitnessMarker.started_at, FitnessMarker.source).execution_options(
            yield_per=ROW_BATCH
        )
    )


def iter_health_workouts(
    session: Session, user_id: int, since: datetime | None = None
) -> Iterator[tuple[HealthWorkout, uuid.UUID | None]]:
    """Health-app workouts by time, with the id of the workout they are linked to."""
    query = (
        select(HealthWorkout, Workout.uuid)
        .outerjoin(Workout, Workout.id == HealthWorkout.workout_id)
        .where(HealthWorkout.user_id == user_id)
    )
    if since is not None:
        query = query.where(HealthWorkout.created_at >= since)
    rows = session.execute(
        query.order_by(HealthWorkout.started_at, HealthWorkout.source).execution_options(yield_per=ROW_BATCH)
    )
    yield from rows


def utc_iso(moment: datetime | None) -> str | None:
    """An instant in UTC, always with microseconds and a `Z`: one fixed shape that spreadsheets and
    pandas (`read_csv(parse_dates=...)`) read without guessing."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def on_clock(moment: datetime, offset_min: int) -> datetime:
    """An instant on the workout's own clock (its UTC offset), as the app sent it."""
    return moment.astimezone(timezone(timedelta(minutes=offset_min)))


def iso(moment: datetime | None, offset_min: int = 0) -> str | None:
    return None if moment is None else on_clock(moment, offset_min).isoformat()


def protocol_time(workout: Workout, point: str) -> tuple[datetime, str]:
    """When a protocol pulse point is taken, and how that was found: `before_N` when stage N starts,
    `after_N` when it ends; the workout's start when the stage is not stored."""
    number = stage_of_point(point)
    stage = next((s for s in workout.stages if s.stage == number), None)
    if stage is None:
        return workout.started_at, f"the workout's start (stage {number} is not stored)"
    if point.startswith("after_"):
        return stage.started_at + timedelta(seconds=stage.duration_s), f"the end of stage {number}"
    return stage.started_at, f"the start of stage {number}"


def segment_times(stage: Stage, start_s: float, duration_s: float) -> tuple[datetime, datetime]:
    start = stage.started_at + timedelta(seconds=start_s)
    return start, start + timedelta(seconds=duration_s)
