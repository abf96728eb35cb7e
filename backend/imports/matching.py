"""Heart-rate samples meet workouts: attach them, link health-app workouts, fill missing pulse points.

The rules, applied after every import to the user's workouts in the imported time range:

1. A workout's **span** runs from its start (or its first stage's start, if earlier) to the end of its
   last stage (stage start + duration_s).
2. A health-app workout (an Apple Watch session) whose time overlaps that span is **linked** to the
   workout, and widens the span to cover it.
3. Heart-rate samples that start within the span, widened by the tolerance (default 120 s) on both
   sides, are **attached** to the workout (`health_samples.workout_id`).
4. A **missing protocol pulse point** is filled from the heart-rate sample, of any source, whose start is
   nearest the point's expected time, if it lies within the tolerance: `before_N` is expected when stage
   N starts, `after_N` when it ends (start + duration_s). Ties go to the earlier sample. A point whose
   stage is not stored, or with no sample near enough, stays missing; a stored point is never changed.
   The reading's `measured_at` is the sample's time.

Everything here is idempotent: run twice, the second run changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from backend import summaries
from backend.db import rowcount, utcnow
from backend.domain import PULSE_MAX_BPM, PULSE_MIN_BPM, PulsePoint, stage_of_point, values
from backend.imports.records import HEART_RATE
from backend.models import HealthSample, HealthWorkout, PulseReading, Stage, Workout

# No workout lasts longer: workouts starting this long before an imported range cannot reach into it.
LONGEST_WORKOUT = timedelta(hours=12)


@dataclass
class MatchCounts:
    workouts_linked: int = 0  # health-app workouts newly linked to a workout
    samples_attached: int = 0  # heart-rate samples newly attached to a workout
    pulse_filled: int = 0  # protocol pulse points filled from samples

    def as_dict(self) -> dict[str, int]:
        return {
            "workouts_linked": self.workouts_linked,
            "samples_attached": self.samples_attached,
            "pulse_filled": self.pulse_filled,
        }


def expected_time(point: str, stages: Sequence[Stage]) -> datetime | None:
    """When the protocol reads pulse at `point`: its stage's start (before_N) or end (after_N)."""
    number = stage_of_point(point)
    stage = next((s for s in stages if s.stage == number), None)
    if stage is None:
        return None
    if point.startswith("after_"):
        return stage.started_at + timedelta(seconds=stage.duration_s)
    return stage.started_at


def workout_span(workout: Workout) -> tuple[datetime, datetime]:
    starts = [workout.started_at, *(s.started_at for s in workout.stages)]
    ends = [workout.started_at, *(s.started_at + timedelta(seconds=s.duration_s) for s in workout.stages)]
    return min(starts), max(ends)


def nearest_heart_rate(
    session: Session, user_id: int, moment: datetime, tolerance: timedelta
) -> HealthSample | None:
    """The heart-rate sample starting nearest `moment`, within `tolerance`; the earlier one on a tie."""
    base = select(HealthSample).where(
        HealthSample.user_id == user_id,
        HealthSample.kind == HEART_RATE,
        HealthSample.bpm.between(PULSE_MIN_BPM, PULSE_MAX_BPM),
    )
    before = session.scalars(
        base.where(HealthSample.started_at <= moment, HealthSample.started_at >= moment - tolerance)
        .order_by(HealthSample.started_at.desc(), HealthSample.id)
        .limit(1)
    ).first()
    after = session.scalars(
        base.where(HealthSample.started_at > moment, HealthSample.started_at <= moment + tolerance)
        .order_by(HealthSample.started_at, HealthSample.id)
        .limit(1)
    ).first()
    if before is None or after is None:
        return before or after
    return before if moment - before.started_at <= after.started_at - moment else after


def match_workout(session: Session, workout: Workout, tolerance: timedelta) -> MatchCounts:
    counts = MatchCounts()
    user_id = workout.user_id
    start, end = workout_span(workout)
    overlapping = list(
        session.scalars(
            select(HealthWorkout).where(
                HealthWorkout.user_id == user_id,
                HealthWorkout.started_at <= end,
                HealthWorkout.ended_at >= start,
            )
        )
    )
    for health_workout in overlapping:
        if health_workout.workout_id != workout.id:
            health_workout.workout_id = workout.id
            counts.workouts_linked += 1
        start, end = min(start, health_workout.started_at), max(end, health_workout.ended_at)
    attached = session.execute(
        update(HealthSample)
        .where(
            HealthSample.user_id == user_id,
            HealthSample.kind == HEART_RATE,
            HealthSample.started_at.between(start - tolerance, end + tolerance),
            or_(HealthSample.workout_id.is_(None), HealthSample.workout_id != workout.id),
        )
        .values(workout_id=workout.id)
        .execution_options(synchronize_session=False)
    )
    counts.samples_attached = rowcount(attached) or 0

    stored = {r.point for r in workout.pulse_readings}
    for point in values(PulsePoint):
        moment = expected_time(point, workout.stages)
        if point in stored or moment is None:
            continue
        sample = nearest_heart_rate(session, user_id, moment, tolerance)
        if sample is None:
            continue
        try:
            with session.begin_nested():  # a concurrent append of the same point wins; we skip it
                session.add(
                    PulseReading(
                        workout_id=workout.id, point=point, bpm=sample.bpm, measured_at=sample.started_at
                    )
                )
        except IntegrityError:
            continue
        counts.pulse_filled += 1
    if counts.pulse_filled:
        workout.updated_at = utcnow()
    session.flush()
    if counts.pulse_filled:
        summaries.refresh(session, [workout.id])  # the new points count in the trends at once
    return counts


def match_workouts(
    session: Session,
    user_id: int,
    since: datetime | None,
    until: datetime | None,
    tolerance_s: float,
) -> MatchCounts:
    """Apply the module's rules to the user's workouts that can touch [since, until] (None: all)."""
    tolerance = timedelta(seconds=tolerance_s)
    query = select(Workout).where(Workout.user_id == user_id)
    if since is not None:
        query = query.where(Workout.started_at >= since - LONGEST_WORKOUT - tolerance)
    if until is not None:
        query = query.where(Workout.started_at <= until + tolerance)
    query = query.options(selectinload(Workout.stages), selectinload(Workout.pulse_readings))
    total = MatchCounts()
    for workout in session.scalars(query.order_by(Workout.started_at, Workout.id)).all():
        counts = match_workout(session, workout, tolerance)
        total.workouts_linked += counts.workouts_linked
        total.samples_attached += counts.samples_attached
        total.pulse_filled += counts.pulse_filled
    return total
