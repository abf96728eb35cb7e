"""Storing and reading workouts: the rules the API enforces beyond field types, in one place.

Functions take a `Session` and the owner's user id and never commit: the caller's transaction decides
(one per request). Every query is scoped by `user_id`, so another user's workout is simply not found.
Imports (Apple Health, exports) can call `put_workout` with a `WorkoutIn` just as the API does.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session, selectinload

from backend.db import utcnow
from backend.domain import STAGE_DEFAULT_DURATION_S, PulsePoint, values
from backend.models import PulseReading, Segment, Stage, Workout
from backend.problems import FieldError, ProblemError
from backend.schemas import (
    STORED,
    Pulse,
    PulseAppend,
    PulseAppendResult,
    SegmentAppend,
    SegmentAppendResult,
    WorkoutFilter,
    WorkoutIn,
    WorkoutListQuery,
    WorkoutOut,
    WorkoutPage,
    WorkoutSummary,
)
from backend.schemas import Segment as SegmentIn
from backend.schemas import Stage as StageIn

PULSE_ORDER = values(PulsePoint)
TIME_TOLERANCE_S = 1e-6  # float sums such as 54.0 + 6.0 must not fall outside a 60 s stage
PROBS_SUM_TOLERANCE = 0.05  # breath_probs are rounded by clients; they still have to look like probabilities

Loc = tuple[str | int, ...]


# ---- rules across fields ------------------------------------------------------------------------------


def check_segments(segments: Sequence[SegmentIn], stage_duration_s: float, loc: Loc) -> list[FieldError]:
    """Segments must lie inside their stage, start at distinct times and carry sensible probabilities."""
    errors: list[FieldError] = []
    seen: set[float] = set()
    for j, seg in enumerate(segments):
        end_s = seg.start_s + seg.duration_s
        if seg.start_s >= stage_duration_s:
            errors.append(
                FieldError(
                    (*loc, j, "start_s"), f"{seg.start_s} s is not inside the stage (0-{stage_duration_s} s)"
                )
            )
        elif end_s > stage_duration_s + TIME_TOLERANCE_S:
            errors.append(
                FieldError(
                    (*loc, j, "duration_s"),
                    f"the segment ends at {end_s} s, after the stage ends at {stage_duration_s} s",
                )
            )
        if seg.start_s in seen:
            errors.append(FieldError((*loc, j, "start_s"), f"another segment also starts at {seg.start_s} s"))
        seen.add(seg.start_s)
        if seg.breath_probs is not None and abs(sum(seg.breath_probs) - 1.0) > PROBS_SUM_TOLERANCE:
            errors.append(
                FieldError(
                    (*loc, j, "breath_probs"),
                    f"probabilities should sum to 1, not {sum(seg.breath_probs):.3f}",
                )
            )
    return errors


def check_workout(body: WorkoutIn) -> list[FieldError]:
    errors: list[FieldError] = []
    stages_seen: set[int] = set()
    for i, stage in enumerate(body.stages):
        if stage.stage in stages_seen:
            errors.append(FieldError(("stages", i, "stage"), f"stage {stage.stage} appears twice"))
        stages_seen.add(stage.stage)
        errors += check_segments(stage.segments, stage.duration_s, ("stages", i, "segments"))
    errors += _check_pulse_points(body.pulse)
    return errors


def _check_pulse_points(pulse: Sequence[Pulse]) -> list[FieldError]:
    errors: list[FieldError] = []
    seen: set[str] = set()
    for k, reading in enumerate(pulse):
        if reading.point.value in seen:
            errors.append(FieldError(("pulse", k, "point"), f"{reading.point.value} appears twice"))
        seen.add(reading.point.value)
    return errors


# ---- reading ------------------------------------------------------------------------------------------


def find_workout(
    session: Session, user_id: int, workout_id: uuid.UUID, *, children: bool = False, lock: bool = False
) -> Workout | None:
    """The user's workout or None. `lock` (every write) takes its row lock on PostgreSQL, so concurrent
    writes to one workout queue up instead of interleaving; on SQLite BEGIN IMMEDIATE already serializes."""
    query = select(Workout).where(Workout.user_id == user_id, Workout.uuid == workout_id)
    if lock:
        query = query.with_for_update(of=Workout)
    if children:
        query = query.options(
            selectinload(Workout.stages).selectinload(Stage.segments), selectinload(Workout.pulse_readings)
        ).execution_options(populate_existing=True)  # reload collections in their stored order
    return session.scalars(query).one_or_none()


def get_workout_or_404(
    session: Session, user_id: int, workout_id: uuid.UUID, *, children: bool = False, lock: bool = False
) -> Workout:
    workout = find_workout(session, user_id, workout_id, children=children, lock=lock)
    if workout is None:
        raise ProblemError(404, "Not Found", f"No workout {workout_id} for this user.")
    return workout


def _local(moment: datetime | None, offset_min: int) -> datetime | None:
    """Show a stored instant on the workout's own clock, as the client sent it."""
    return None if moment is None else moment.astimezone(timezone(timedelta(minutes=offset_min)))


def _pulse_json(readings: Sequence[PulseReading], offset_min: int) -> list[dict[str, Any]]:
    ordered = sorted(readings, key=lambda r: PULSE_ORDER.index(r.point))
    return [
        {"point": r.point, "bpm": r.bpm, "measured_at": _local(r.measured_at, offset_min)} for r in ordered
    ]


def workout_json(workout: Workout) -> dict[str, Any]:
    """The workout in the PUT shape (timestamps on the workout's clock), plus id and bookkeeping."""
    offset = workout.utc_offset_min
    data = {
        "id": workout.uuid,
        "started_at": _local(workout.started_at, offset),
        "activity": workout.activity,
        "environment": workout.environment,
        "model_version": workout.model_version,
        "device": workout.device,
        "stages": [
            {
                "stage": stage.stage,
                "started_at": _local(stage.started_at, offset),
                "duration_s": stage.duration_s,
                "segments": [
                    {
                        "start_s": seg.start_s,
                        "duration_s": seg.duration_s,
                        "rr_bpm": seg.rr_bpm,
                        "respiration_count": seg.respiration_count,
                        "breath_class": seg.breath_class,
                        "breath_probs": seg.breath_probs,
                        "noise_prob": seg.noise_prob,
                    }
                    for seg in stage.segments
                ],
            }
            for stage in workout.stages
        ],
        "pulse": _pulse_json(workout.pulse_readings, offset),
        "created_at": workout.created_at,
        "updated_at": workout.updated_at,
    }
    return WorkoutOut.model_validate(data, strict=False, context=STORED).model_dump(mode="json")


def workout_conditions(user_id: int, filters: WorkoutFilter) -> list[ColumnElement[bool]]:
    """WHERE clauses for `from`/`to`/`activity`: a date means the workout's local day, inclusive."""
    conditions: list[ColumnElement[bool]] = [Workout.user_id == user_id]
    if isinstance(filters.from_, datetime):
        conditions.append(Workout.started_at >= filters.from_)
    elif isinstance(filters.from_, date):
        conditions.append(Workout.local_date >= filters.from_)
    if isinstance(filters.to, datetime):
        conditions.append(Workout.started_at < filters.to)
    elif isinstance(filters.to, date):
        conditions.append(Workout.local_date <= filters.to)
    if filters.activity is not None:
        conditions.append(Workout.activity == filters.activity.value)
    return conditions


def _encode_cursor(workout: Workout) -> str:
    raw = json.dumps([workout.started_at.isoformat(), workout.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started, workout_pk = json.loads(raw)
        moment = datetime.fromisoformat(started)
        if moment.tzinfo is None or not isinstance(workout_pk, int):
            raise ValueError
        return moment, workout_pk
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ProblemError.invalid(
            [FieldError(("cursor",), "not a cursor returned by this API", "query")], "Invalid query parameter"
        ) from None


def list_workouts(session: Session, user_id: int, query: WorkoutListQuery) -> dict[str, Any]:
    """Newest first, keyset-paginated on (started_at, id) so pages stay stable while data is added."""
    stmt: Select[tuple[Workout]] = (
        select(Workout).where(*workout_conditions(user_id, query)).options(selectinload(Workout.stages))
    )
    if query.cursor is not None:
        started, workout_pk = _decode_cursor(query.cursor)
        stmt = stmt.where(
            or_(Workout.started_at < started, and_(Workout.started_at == started, Workout.id < workout_pk))
        )
    rows = list(
        session.scalars(stmt.order_by(Workout.started_at.desc(), Workout.id.desc()).limit(query.limit + 1))
    )
    page, more = rows[: query.limit], len(rows) > query.limit
    summaries = [
        WorkoutSummary.model_validate(
            {
                "id": w.uuid,
                "started_at": _local(w.started_at, w.utc_offset_min),
                "activity": w.activity,
                "environment": w.environment,
                "model_version": w.model_version,
                "device": w.device,
                "stages": [s.stage for s in w.stages],
                "updated_at": w.updated_at,
            }
        )
        for w in page
    ]
    result = WorkoutPage(workouts=summaries, next_cursor=_encode_cursor(page[-1]) if more else None)
    return result.model_dump(mode="json")


# ---- writing ------------------------------------------------------------------------------------------


def _segment_row(seg: SegmentIn) -> Segment:
    probs = seg.breath_probs or [None, None, None]
    return Segment(
        start_s=seg.start_s,
        duration_s=seg.duration_s,
        rr_bpm=seg.rr_bpm,
        respiration_count=seg.respiration_count,
        breath_class=seg.breath_class.value if seg.breath_class else None,
        prob_none=probs[0],
        prob_normal=probs[1],
        prob_heavy=probs[2],
        noise_prob=seg.noise_prob,
    )


def _stage_row(stage: StageIn) -> Stage:
    return Stage(
        stage=stage.stage,
        started_at=stage.started_at,
        duration_s=stage.duration_s,
        segments=[_segment_row(seg) for seg in stage.segments],
    )


def _pulse_row(reading: Pulse) -> PulseReading:
    return PulseReading(point=reading.point.value, bpm=reading.bpm, measured_at=reading.measured_at)


def put_workout(
    session: Session,
    user_id: int,
    workout_id: uuid.UUID,
    body: WorkoutIn,
    *,
    default_device: str | None = None,
) -> tuple[Workout, bool]:
    """Create or wholly replace a workout; returns it and whether it was created."""
    if errors := check_workout(body):
        raise ProblemError.invalid(errors, "Invalid request body")
    workout = find_workout(session, user_id, workout_id, children=True, lock=True)
    created = workout is None
    if workout is None:
        workout = Workout(uuid=workout_id, user_id=user_id)
        session.add(workout)
    else:
        # Old children go first: their unique (workout, stage) and (workout, point) would clash otherwise.
        workout.stages.clear()
        workout.pulse_readings.clear()
        session.flush()
        workout.updated_at = utcnow()
    offset = body.started_at.utcoffset() or timedelta(0)
    workout.started_at = body.started_at
    workout.utc_offset_min = int(offset.total_seconds() // 60)
    workout.local_date = body.started_at.date()
    workout.activity = body.activity.value
    workout.environment = body.environment.value
    workout.model_version = body.model_version
    workout.device = body.device if body.device is not None else default_device
    workout.stages = [_stage_row(stage) for stage in body.stages]
    workout.pulse_readings = [_pulse_row(reading) for reading in body.pulse]
    session.flush()
    return workout, created


def delete_workout(session: Session, user_id: int, workout_id: uuid.UUID) -> None:
    session.delete(get_workout_or_404(session, user_id, workout_id, lock=True))
    session.flush()


def append_segments(
    session: Session, workout: Workout, stage_number: int, body: SegmentAppend
) -> dict[str, Any]:
    """Add segments to a stage, creating the stage when `started_at` is given."""
    stage = session.scalars(
        select(Stage).where(Stage.workout_id == workout.id, Stage.stage == stage_number)
    ).one_or_none()
    stored_starts: set[float] = set()
    if stage is None:
        if body.started_at is None:
            raise ProblemError.invalid(
                [
                    FieldError(
                        ("started_at",),
                        f"stage {stage_number} is not stored yet; send started_at to create it",
                    )
                ]
            )
        stage = Stage(
            workout=workout,
            stage=stage_number,
            started_at=body.started_at,
            duration_s=body.duration_s or STAGE_DEFAULT_DURATION_S,
        )
        session.add(stage)
    else:
        mismatches = []
        if body.started_at is not None and body.started_at != stage.started_at:
            mismatches.append(
                FieldError(
                    ("started_at",),
                    f"stage {stage_number} is stored as starting at "
                    f"{_local(stage.started_at, workout.utc_offset_min)}",
                )
            )
        if body.duration_s is not None and body.duration_s != stage.duration_s:
            mismatches.append(
                FieldError(
                    ("duration_s",), f"stage {stage_number} is stored with duration_s {stage.duration_s}"
                )
            )
        if mismatches:
            raise ProblemError.invalid(mismatches)
        stored_starts = set(session.scalars(select(Segment.start_s).where(Segment.stage_id == stage.id)))
    if errors := check_segments(body.segments, stage.duration_s, ("segments",)):
        raise ProblemError.invalid(errors, "Invalid request body")
    for j, seg in enumerate(body.segments):
        if seg.start_s in stored_starts:
            raise ProblemError.conflict(
                FieldError(
                    ("segments", j, "start_s"),
                    f"a segment starting at {seg.start_s} s is already stored in stage {stage_number}",
                )
            )
    stage.segments.extend(_segment_row(seg) for seg in body.segments)
    workout.updated_at = utcnow()
    session.flush()
    total = session.scalar(select(func.count()).select_from(Segment).where(Segment.stage_id == stage.id)) or 0
    result = SegmentAppendResult(
        workout_id=workout.uuid, stage=stage_number, appended=len(body.segments), segment_count=total
    )
    return result.model_dump(mode="json")


def append_pulse(session: Session, workout: Workout, body: PulseAppend) -> dict[str, Any]:
    """Add pulse readings at protocol points not stored yet (a point is read once per workout)."""
    if errors := _check_pulse_points(body.pulse):
        raise ProblemError.invalid(errors, "Invalid request body")
    stored = {r.point for r in workout.pulse_readings}
    for k, reading in enumerate(body.pulse):
        if reading.point.value in stored:
            raise ProblemError.conflict(
                FieldError(("pulse", k, "point"), f"pulse at {reading.point.value} is already stored")
            )
    workout.pulse_readings.extend(_pulse_row(reading) for reading in body.pulse)
    workout.updated_at = utcnow()
    session.flush()
    result = PulseAppendResult.model_validate(
        {
            "workout_id": workout.uuid,
            "appended": len(body.pulse),
            "pulse": _pulse_json(workout.pulse_readings, workout.utc_offset_min),
        },
        strict=False,
        context=STORED,
    )
    return result.model_dump(mode="json")
