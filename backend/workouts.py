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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, delete, insert, or_, select, update
from sqlalchemy.orm import Session, selectinload

from backend import summaries
from backend.db import bulk_insert, insert_ignoring_duplicates, rowcount, table_of, utcnow
from backend.domain import STAGE_DEFAULT_DURATION_S, NoRateReason, PulsePoint, values
from backend.models import PulseReading, Segment, Stage, StageSummary, Workout
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
        errors += _check_rate_or_reason(seg, (*loc, j))
        if seg.breath_probs is not None and abs(sum(seg.breath_probs) - 1.0) > PROBS_SUM_TOLERANCE:
            errors.append(
                FieldError(
                    (*loc, j, "breath_probs"),
                    f"probabilities should sum to 1, not {sum(seg.breath_probs):.3f}",
                )
            )
    return errors


def _check_rate_or_reason(seg: SegmentIn, loc: Loc) -> list[FieldError]:
    """A reading has a rate or the reason there is none (issue 19), never both and never neither."""
    if seg.rr_bpm is None and seg.reason is None:
        reasons = ", ".join(values(NoRateReason))
        return [
            FieldError((*loc, "reason"), f"a reading without a rate (rr_bpm null) needs a reason: {reasons}")
        ]
    if seg.rr_bpm is not None and seg.reason is not None:
        return [
            FieldError(
                (*loc, "reason"),
                f"reason {seg.reason.value!r} is only for a reading without a rate; this one has rr_bpm"
                f" {seg.rr_bpm}",
            )
        ]
    return []


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


class _PulseLike(Protocol):
    """A pulse reading as stored (a row) or as uploaded (a request's reading)."""

    @property
    def point(self) -> str: ...
    @property
    def bpm(self) -> float: ...
    @property
    def measured_at(self) -> datetime | None: ...


def _pulse_json(readings: Sequence[_PulseLike], offset_min: int) -> list[dict[str, Any]]:
    ordered = sorted(readings, key=lambda r: PULSE_ORDER.index(r.point))
    return [
        {"point": r.point, "bpm": r.bpm, "measured_at": _local(r.measured_at, offset_min)} for r in ordered
    ]


def _document(
    head: Any, offset_min: int, stages: Iterable[Any], pulse: Iterable[Any], device: str | None
) -> dict[str, Any]:
    """The PUT shape (timestamps on the workout's clock) of stored rows or of a validated body.

    `head` has the workout's uuid-less fields (`started_at`, `activity`, ...); `stages` and their
    `segments` come in stored order; stage, segment and pulse objects only need the attributes both the
    models and the request schemas have, so an upload is answered from what was validated, unread.
    """
    data = {
        "started_at": _local(head.started_at, offset_min),
        "activity": head.activity,
        "environment": head.environment,
        "model_version": head.model_version,
        "device": device,
        "stages": [
            {
                "stage": stage.stage,
                "started_at": _local(stage.started_at, offset_min),
                "duration_s": stage.duration_s,
                "segments": [
                    {
                        "start_s": seg.start_s,
                        "duration_s": seg.duration_s,
                        "rr_bpm": seg.rr_bpm,
                        "rr_confidence": seg.rr_confidence,
                        "reason": seg.reason,
                        "respiration_count": seg.respiration_count,
                        "breath_class": seg.breath_class,
                        "breath_probs": seg.breath_probs,
                        "noise_prob": seg.noise_prob,
                    }
                    for seg in segments
                ],
            }
            for stage, segments in stages
        ],
        "pulse": _pulse_json(list(pulse), offset_min),
    }
    return data


def workout_json(workout: Workout) -> dict[str, Any]:
    """The stored workout in the PUT shape, plus id and bookkeeping."""
    data = _document(
        workout,
        workout.utc_offset_min,
        ((stage, stage.segments) for stage in workout.stages),
        workout.pulse_readings,
        workout.device,
    )
    data.update(id=workout.uuid, created_at=workout.created_at, updated_at=workout.updated_at)
    return WorkoutOut.model_validate(data, strict=False, context=STORED).model_dump(mode="json")


def stored_workout_json(stored: StoredWorkout, body: WorkoutIn) -> dict[str, Any]:
    """What `workout_json` answers after `put_workout(body)`, built from the body instead of re-read:
    stages by number, segments by start, pulse in protocol order, times on the workout's clock."""
    stages = sorted(body.stages, key=lambda s: s.stage)
    data = _document(
        body,
        stored.utc_offset_min,
        ((stage, sorted(stage.segments, key=lambda seg: seg.start_s)) for stage in stages),
        body.pulse,
        stored.device,
    )
    data.update(id=stored.uuid, created_at=stored.created_at, updated_at=stored.updated_at)
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


def _encode_cursor(workout: Any) -> str:
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


# What a list entry shows: read as plain rows (no ORM objects: a page is 50 workouts and 200 stages).
LIST_COLUMNS = (
    Workout.id,
    Workout.uuid,
    Workout.started_at,
    Workout.utc_offset_min,
    Workout.activity,
    Workout.environment,
    Workout.model_version,
    Workout.device,
    Workout.updated_at,
)


def list_workouts(session: Session, user_id: int, query: WorkoutListQuery) -> dict[str, Any]:
    """Newest first, keyset-paginated on (started_at, id) so pages stay stable while data is added."""
    stmt = select(*LIST_COLUMNS).where(*workout_conditions(user_id, query))
    if query.cursor is not None:
        started, workout_pk = _decode_cursor(query.cursor)
        stmt = stmt.where(
            or_(Workout.started_at < started, and_(Workout.started_at == started, Workout.id < workout_pk))
        )
    rows = session.execute(
        stmt.order_by(Workout.started_at.desc(), Workout.id.desc()).limit(query.limit + 1)
    ).all()
    page, more = rows[: query.limit], len(rows) > query.limit
    numbers = stage_numbers(session, [row.id for row in page])
    summaries = [workout_summary(row, numbers[row.id]) for row in page]
    result = WorkoutPage(workouts=summaries, next_cursor=_encode_cursor(page[-1]) if more else None)
    return result.model_dump(mode="json")


def stage_numbers(session: Session, workout_ids: Sequence[int]) -> dict[int, list[int]]:
    """The stored stage numbers of each of these workouts, in order (one query for a whole page)."""
    numbers: dict[int, list[int]] = {workout_id: [] for workout_id in workout_ids}
    if workout_ids:
        query = (
            select(Stage.workout_id, Stage.stage)
            .where(Stage.workout_id.in_(workout_ids))
            .order_by(Stage.workout_id, Stage.stage)
        )
        for workout_id, stage in session.execute(query):
            numbers[workout_id].append(stage)
    return numbers


def workout_summary(w: Any, stages: Sequence[int] | None = None) -> WorkoutSummary:
    """A list entry: its time on its own clock, what it was, which stages it has. `w` is a Workout (its
    stages loaded, unless `stages` is given) or a row of LIST_COLUMNS with its `stage_numbers`."""
    return WorkoutSummary.model_validate(
        {
            "id": w.uuid,
            "started_at": _local(w.started_at, w.utc_offset_min),
            "activity": w.activity,
            "environment": w.environment,
            "model_version": w.model_version,
            "device": w.device,
            "stages": [s.stage for s in w.stages] if stages is None else list(stages),
            "updated_at": w.updated_at,
        }
    )


# ---- writing ------------------------------------------------------------------------------------------
# SQLAlchemy Core, not the unit of work: a workout is ~90 rows, and bulk INSERTs (one executemany per
# table; psycopg pipelines it with one prepared statement) cost a fraction of the ORM's per-row flush.


@dataclass(frozen=True)
class StoredWorkout:
    """The bookkeeping of a workout `put_workout` just wrote, enough to answer without reading it back."""

    id: int
    uuid: uuid.UUID
    utc_offset_min: int
    device: str | None
    created_at: datetime
    updated_at: datetime


def _segment_row(stage_id: int, seg: SegmentIn) -> dict[str, Any]:
    probs = seg.breath_probs or (None, None, None)
    return {
        "stage_id": stage_id,
        "start_s": seg.start_s,
        "duration_s": seg.duration_s,
        "rr_bpm": seg.rr_bpm,
        "rr_confidence": seg.rr_confidence,
        "reason": seg.reason.value if seg.reason else None,
        "respiration_count": seg.respiration_count,
        "breath_class": seg.breath_class.value if seg.breath_class else None,
        "prob_none": probs[0],
        "prob_normal": probs[1],
        "prob_heavy": probs[2],
        "noise_prob": seg.noise_prob,
    }


def _pulse_row(workout_id: int, reading: Pulse) -> dict[str, Any]:
    return {
        "workout_id": workout_id,
        "point": reading.point.value,
        "bpm": reading.bpm,
        "measured_at": reading.measured_at,
    }


def _insert_stages(session: Session, workout_id: int, stages: Sequence[StageIn]) -> list[int]:
    """Insert stage rows in one statement; their ids, in the order given."""
    if not stages:
        return []
    rows = [
        {"workout_id": workout_id, "stage": s.stage, "started_at": s.started_at, "duration_s": s.duration_s}
        for s in stages
    ]
    table = table_of(Stage)
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    result = session.connection().execute(statement, rows)
    return list(result.scalars())


def _insert_segments(session: Session, stage_id: int, segments: Iterable[SegmentIn]) -> None:
    bulk_insert(session.connection(), table_of(Segment), [_segment_row(stage_id, seg) for seg in segments])


def put_workout(
    session: Session,
    user_id: int,
    workout_id: uuid.UUID,
    body: WorkoutIn,
    *,
    default_device: str | None = None,
) -> tuple[StoredWorkout, bool]:
    """Create or wholly replace a workout, its children and its stage summaries; returns it and whether
    it was created. The workout row is locked first (PostgreSQL: FOR UPDATE; SQLite: BEGIN IMMEDIATE)."""
    if errors := check_workout(body):
        raise ProblemError.invalid(errors, "Invalid request body")
    connection = session.connection()  # Core from here: no unit-of-work bookkeeping per row
    now = utcnow()
    offset = body.started_at.utcoffset() or timedelta(0)
    fields: dict[str, Any] = {
        "started_at": body.started_at,
        "utc_offset_min": int(offset.total_seconds() // 60),
        "local_date": body.started_at.date(),
        "activity": body.activity.value,
        "environment": body.environment.value,
        "model_version": body.model_version,
        "device": body.device if body.device is not None else default_device,
        "updated_at": now,
    }
    # A new workout (the usual upload) costs one statement: INSERT ... ON CONFLICT DO NOTHING RETURNING.
    # When the id is taken it returns nothing, having waited (PostgreSQL) for any transaction still
    # writing that row; the row is then read and locked (FOR UPDATE) and replaced. SQLite's BEGIN
    # IMMEDIATE already serializes the two.
    workouts = table_of(Workout)
    claim = insert_ignoring_duplicates(session, workouts, ("user_id", "uuid"))
    pk = connection.execute(
        claim.values(uuid=workout_id, user_id=user_id, created_at=now, **fields).returning(workouts.c.id)
    ).scalar()
    created = pk is not None
    if pk is not None:
        created_at = now
    else:
        pk, created_at = connection.execute(
            select(Workout.id, Workout.created_at)
            .where(Workout.user_id == user_id, Workout.uuid == workout_id)
            .with_for_update()
        ).one()
        # Old children go (segments by ON DELETE CASCADE): the new ones reuse their unique keys.
        for table in (Stage, PulseReading, StageSummary):
            children = table_of(table)
            connection.execute(delete(children).where(children.c.workout_id == pk))
        connection.execute(update(workouts).where(workouts.c.id == pk).values(**fields))
    stage_ids = _insert_stages(session, pk, body.stages)
    segment_rows = [
        _segment_row(stage_id, seg)
        for stage_id, stage in zip(stage_ids, body.stages, strict=True)
        for seg in stage.segments
    ]
    bulk_insert(connection, table_of(Segment), segment_rows)
    if body.pulse:
        connection.execute(insert(table_of(PulseReading)), [_pulse_row(pk, r) for r in body.pulse])
    pulse_bpm = {reading.point.value: reading.bpm for reading in body.pulse}
    segments_by_stage = {
        s.stage: [
            summaries.Reading(
                seg.rr_bpm, seg.rr_confidence, seg.breath_class.value if seg.breath_class else None
            )
            for seg in s.segments
        ]
        for s in body.stages
    }
    summaries.insert_rows(session, summaries.workout_rows(pk, user_id, segments_by_stage, pulse_bpm))
    stored = StoredWorkout(pk, workout_id, fields["utc_offset_min"], fields["device"], created_at, now)
    return stored, created


def delete_workout(session: Session, user_id: int, workout_id: uuid.UUID) -> None:
    """One DELETE; the database removes stages, segments, pulse and summaries (ON DELETE CASCADE)."""
    deleted = session.execute(delete(Workout).where(Workout.user_id == user_id, Workout.uuid == workout_id))
    if not rowcount(deleted):
        raise ProblemError(404, "Not Found", f"No workout {workout_id} for this user.")


def append_segments(
    session: Session, workout: Workout, stage_number: int, body: SegmentAppend
) -> dict[str, Any]:
    """Add segments to a stage, creating the stage when `started_at` is given."""
    stage = session.execute(
        select(Stage.id, Stage.started_at, Stage.duration_s).where(
            Stage.workout_id == workout.id, Stage.stage == stage_number
        )
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
        duration_s = body.duration_s or STAGE_DEFAULT_DURATION_S
        new = StageIn(stage=stage_number, started_at=body.started_at, duration_s=duration_s)
        stage_id = _insert_stages(session, workout.id, [new])[0]
    else:
        stage_id, started_at, duration_s = stage
        mismatches = []
        if body.started_at is not None and body.started_at != started_at:
            mismatches.append(
                FieldError(
                    ("started_at",),
                    f"stage {stage_number} is stored as starting at "
                    f"{_local(started_at, workout.utc_offset_min)}",
                )
            )
        if body.duration_s is not None and body.duration_s != duration_s:
            mismatches.append(
                FieldError(("duration_s",), f"stage {stage_number} is stored with duration_s {duration_s}")
            )
        if mismatches:
            raise ProblemError.invalid(mismatches)
        stored_starts = set(session.scalars(select(Segment.start_s).where(Segment.stage_id == stage_id)))
    if errors := check_segments(body.segments, duration_s, ("segments",)):
        raise ProblemError.invalid(errors, "Invalid request body")
    for j, seg in enumerate(body.segments):
        if seg.start_s in stored_starts:
            raise ProblemError.conflict(
                FieldError(
                    ("segments", j, "start_s"),
                    f"a segment starting at {seg.start_s} s is already stored in stage {stage_number}",
                )
            )
    _insert_segments(session, stage_id, body.segments)
    _touch(session, workout)
    summaries.refresh(session, [workout.id])
    result = SegmentAppendResult(
        workout_id=workout.uuid,
        stage=stage_number,
        appended=len(body.segments),
        segment_count=len(stored_starts) + len(body.segments),
    )
    return result.model_dump(mode="json")


def append_pulse(session: Session, workout: Workout, body: PulseAppend) -> dict[str, Any]:
    """Add pulse readings at protocol points not stored yet (a point is read once per workout)."""
    if errors := _check_pulse_points(body.pulse):
        raise ProblemError.invalid(errors, "Invalid request body")
    stored = list(
        session.execute(
            select(PulseReading.point, PulseReading.bpm, PulseReading.measured_at).where(
                PulseReading.workout_id == workout.id
            )
        )
    )
    stored_points = {r.point for r in stored}
    for k, reading in enumerate(body.pulse):
        if reading.point.value in stored_points:
            raise ProblemError.conflict(
                FieldError(("pulse", k, "point"), f"pulse at {reading.point.value} is already stored")
            )
    session.connection().execute(
        insert(table_of(PulseReading)), [_pulse_row(workout.id, reading) for reading in body.pulse]
    )
    _touch(session, workout)
    summaries.refresh(session, [workout.id])
    result = PulseAppendResult.model_validate(
        {
            "workout_id": workout.uuid,
            "appended": len(body.pulse),
            "pulse": _pulse_json([*stored, *body.pulse], workout.utc_offset_min),
        },
        strict=False,
        context=STORED,
    )
    return result.model_dump(mode="json")


def _touch(session: Session, workout: Workout) -> None:
    workout.updated_at = utcnow()
    session.flush()
