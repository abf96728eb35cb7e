"""The trends as computed before stage summaries existed (issue 14): straight from every segment and pulse
reading, per request. Kept as the reference the summary-based trends must agree with
(tests/backend/test_stage_summaries.py); test scaffolding only, never imported by the service.
Issue 19 added the confidence rule (backend.domain) here too, straight from the segments: the medians
rank only confident readings, and what was left out is counted per stage from the segments.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, Float, Subquery, and_, case, cast, func, or_, select
from sqlalchemy.orm import Session

from backend import domain
from backend.domain import STAGES, BreathClass, PulsePoint, stage_of_point
from backend.models import PulseReading, Segment, Stage, Workout
from backend.schemas import RrVsPulse, StageTrends, WeeklyTrends, WorkoutFilter
from backend.trends import (
    IsoWeekStart,
    _distribution,
    _float,
    _with_markers,
    left_out_json,
    pearson_r,
    weekly_markers,
)
from backend.workouts import workout_conditions

# ---- per-workout reductions, in SQL -------------------------------------------------------------------


def confident() -> ColumnElement[bool]:
    """The confidence rule of backend.domain, in SQL."""
    return and_(
        Segment.rr_bpm.is_not(None),
        or_(Segment.rr_confidence.is_(None), Segment.rr_confidence >= domain.RR_CONFIDENCE_MIN),
    )


def stage_rr_medians(user_id: int, filters: WorkoutFilter) -> Subquery:
    """(workout_id, stage, rr_bpm): the median RR of each stage's confident segments, by the middle row(s),
    for stages with at least MIN_CONFIDENT_READINGS of them."""
    ranked = (
        select(
            Stage.workout_id,
            Stage.stage,
            Segment.rr_bpm,
            func.row_number().over(partition_by=Segment.stage_id, order_by=Segment.rr_bpm).label("rn"),
            func.count().over(partition_by=Segment.stage_id).label("cnt"),
        )
        .join(Stage, Stage.id == Segment.stage_id)
        .join(Workout, Workout.id == Stage.workout_id)
        .where(*workout_conditions(user_id, filters), confident())
        .subquery("ranked")
    )
    middle = [(ranked.c.cnt + 1) // 2, (ranked.c.cnt + 2) // 2]  # one row when odd, the two middle when even
    return (
        select(ranked.c.workout_id, ranked.c.stage, func.avg(ranked.c.rr_bpm).label("rr_bpm"))
        .where(ranked.c.rn.in_(middle), ranked.c.cnt >= domain.MIN_CONFIDENT_READINGS)
        .group_by(ranked.c.workout_id, ranked.c.stage)
        .subquery("stage_rr")
    )


def stage_pulse_means(user_id: int, filters: WorkoutFilter) -> Subquery:
    """(workout_id, stage, bpm): mean pulse over the stage's protocol points (stage 3: before_3, after_3)."""
    point_stage = case(*((PulseReading.point == p.value, stage_of_point(p)) for p in PulsePoint))
    points = (
        select(PulseReading.workout_id, point_stage.label("stage"), PulseReading.bpm)
        .join(Workout, Workout.id == PulseReading.workout_id)
        .where(*workout_conditions(user_id, filters))
        .subquery("pulse_points")
    )
    return (
        select(points.c.workout_id, points.c.stage, func.avg(points.c.bpm).label("bpm"))
        .group_by(points.c.workout_id, points.c.stage)
        .subquery("stage_pulse")
    )


def left_out_by_workout(
    session: Session, user_id: int, filters: WorkoutFilter
) -> dict[Any, dict[int, list[int]]]:
    """{workout id: {stage: [readings without rate, low-confidence rates, 1 if not heard enough]}}, counted
    in Python from every stored segment."""
    rows = session.execute(
        select(Workout.id, Stage.stage, Segment.id, Segment.rr_bpm, Segment.rr_confidence)
        .join(Stage, Stage.workout_id == Workout.id)
        .outerjoin(Segment, Segment.stage_id == Stage.id)
        .where(*workout_conditions(user_id, filters))
    )
    readings: dict[Any, dict[int, list[tuple[Any, Any]]]] = defaultdict(lambda: defaultdict(list))
    for workout_id, stage, segment_id, rr_bpm, rr_confidence in rows:
        bucket = readings[workout_id][stage]
        if segment_id is not None:
            bucket.append((rr_bpm, rr_confidence))
    result: dict[Any, dict[int, list[int]]] = {}
    for workout_id, stages in readings.items():
        result[workout_id] = {}
        for stage, segs in stages.items():
            no_rate = sum(1 for rr, _ in segs if rr is None)
            low = sum(
                1 for rr, c in segs if rr is not None and c is not None and c < domain.RR_CONFIDENCE_MIN
            )
            confident_n = len(segs) - no_rate - low
            result[workout_id][stage] = [
                no_rate,
                low,
                int(bool(segs) and confident_n < domain.MIN_CONFIDENT_READINGS),
            ]
    return result


def _summed(per_workout: dict[Any, dict[int, list[int]]], workout_ids: Any, stage: int) -> dict[str, int]:
    totals = [0, 0, 0]
    for workout_id in workout_ids:
        for k, count in enumerate(per_workout.get(workout_id, {}).get(stage, [0, 0, 0])):
            totals[k] += count
    return left_out_json(*totals)


# ---- endpoints' queries -------------------------------------------------------------------------------


def stage_trends(session: Session, user_id: int, filters: WorkoutFilter) -> dict[str, Any]:
    by_stage: dict[str, dict[int, list[tuple[Any, float]]]] = {
        "rr": defaultdict(list),
        "pulse": defaultdict(list),
    }
    for kind, sub, column in (
        ("rr", stage_rr_medians(user_id, filters), "rr_bpm"),
        ("pulse", stage_pulse_means(user_id, filters), "bpm"),
    ):
        rows = session.execute(
            select(Workout.uuid, sub.c.stage, sub.c[column])
            .join(sub, sub.c.workout_id == Workout.id)
            .order_by(Workout.started_at, Workout.id)
        )
        for workout_uuid, stage, value in rows:
            by_stage[kind][stage].append((workout_uuid, float(value)))
    left_out = left_out_by_workout(session, user_id, filters)
    # the trends join workouts to their summaries: a workout with only pulse in other stages still counts
    result = {
        "stages": [
            {
                "stage": n,
                "rr": _distribution(by_stage["rr"][n]),
                "pulse": _distribution(by_stage["pulse"][n]),
                "rr_left_out": _summed(left_out, left_out.keys(), n),
            }
            for n in STAGES
        ]
    }
    return StageTrends.model_validate(result).model_dump(mode="json")


def rr_vs_pulse(session: Session, user_id: int, filters: WorkoutFilter) -> dict[str, Any]:
    rr, pulse = stage_rr_medians(user_id, filters), stage_pulse_means(user_id, filters)
    rows = session.execute(
        select(Workout.uuid, Workout.started_at, Workout.utc_offset_min, rr.c.stage, rr.c.rr_bpm, pulse.c.bpm)
        .join(rr, rr.c.workout_id == Workout.id)
        .join(pulse, and_(pulse.c.workout_id == Workout.id, pulse.c.stage == rr.c.stage))
        .order_by(Workout.started_at, Workout.id)
    )
    pairs: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for workout_uuid, started_at, offset_min, stage, rr_bpm, pulse_bpm in rows:
        local_start = started_at.astimezone(timezone(timedelta(minutes=offset_min)))
        pairs[stage].append(
            {
                "workout_id": workout_uuid,
                "started_at": local_start,
                "rr_bpm": float(rr_bpm),
                "pulse_bpm": float(pulse_bpm),
            }
        )
    result = {
        "stages": [
            {
                "stage": n,
                "n": len(pairs[n]),
                "pairs": pairs[n],
                "pearson_r": pearson_r([p["rr_bpm"] for p in pairs[n]], [p["pulse_bpm"] for p in pairs[n]]),
            }
            for n in STAGES
        ]
    }
    return RrVsPulse.model_validate(result).model_dump(mode="json")


def weekly(session: Session, user_id: int, filters: WorkoutFilter) -> dict[str, Any]:
    """One row per ISO week of the workouts' local dates, aggregated in the database."""
    conditions = workout_conditions(user_id, filters)
    rr = stage_rr_medians(user_id, filters)

    def rr_at(stage: int) -> Any:
        return func.max(case((rr.c.stage == stage, rr.c.rr_bpm))).label(f"rr{stage}")

    per_workout = (
        select(Workout.id.label("workout_id"), Workout.local_date, *(rr_at(n) for n in STAGES))
        .outerjoin(rr, rr.c.workout_id == Workout.id)
        .where(*conditions)
        .group_by(Workout.id, Workout.local_date)
        .subquery("per_workout")
    )

    def bpm_at(point: PulsePoint) -> Any:
        return func.max(case((PulseReading.point == point.value, PulseReading.bpm))).label(point.value)

    recovery_pulse = (
        select(PulseReading.workout_id, bpm_at(PulsePoint.after_3), bpm_at(PulsePoint.after_4))
        .join(Workout, Workout.id == PulseReading.workout_id)
        .where(*conditions)
        .group_by(PulseReading.workout_id)
        .subquery("recovery_pulse")
    )
    classes = (
        select(
            Stage.workout_id,
            func.sum(case((Segment.breath_class == BreathClass.heavy.value, 1), else_=0)).label("heavy"),
            func.count(Segment.breath_class).label("classified"),
        )
        .join(Stage, Stage.id == Segment.stage_id)
        .join(Workout, Workout.id == Stage.workout_id)
        .where(*conditions)
        .group_by(Stage.workout_id)
        .subquery("classes")
    )
    w = per_workout.c
    peak = case((w.rr2.is_(None), w.rr3), (w.rr3.is_(None), w.rr2), (w.rr2 >= w.rr3, w.rr2), else_=w.rr3)
    week = IsoWeekStart(w.local_date)
    left_out = left_out_by_workout(session, user_id, filters)
    week_workouts: dict[Any, list[Any]] = defaultdict(list)
    for workout_id, local_date in session.execute(select(w.workout_id, w.local_date)):
        week_workouts[local_date - timedelta(days=local_date.weekday())].append(workout_id)
    rows = session.execute(
        select(
            week.label("week_start"),
            func.count(w.workout_id).label("workouts"),
            func.avg(w.rr1).label("resting_rr_bpm"),
            func.avg(peak).label("peak_rr_bpm"),
            func.avg(w.rr3 - w.rr4).label("rr_recovery_bpm"),
            func.avg(recovery_pulse.c.after_3 - recovery_pulse.c.after_4).label("hr_recovery_bpm"),
            (cast(func.sum(classes.c.heavy), Float) / func.nullif(func.sum(classes.c.classified), 0)).label(
                "heavy_share"
            ),
        )
        .select_from(per_workout)
        .outerjoin(recovery_pulse, recovery_pulse.c.workout_id == w.workout_id)
        .outerjoin(classes, classes.c.workout_id == w.workout_id)
        .group_by(week)
        .order_by(week)
    ).mappings()
    weeks = []
    for row in rows:
        start = row["week_start"]
        iso = start.isocalendar()
        weeks.append(
            {
                "week": f"{iso.year}-W{iso.week:02d}",
                "week_start": start,
                "workouts": row["workouts"],
                **{
                    k: _float(row[k])
                    for k in (
                        "resting_rr_bpm",
                        "peak_rr_bpm",
                        "rr_recovery_bpm",
                        "hr_recovery_bpm",
                        "heavy_share",
                    )
                },
                "rr_left_out": [{"stage": n, **_summed(left_out, week_workouts[start], n)} for n in STAGES],
            }
        )
    weeks = _with_markers(weeks, weekly_markers(session, user_id, filters))  # issue 16, unchanged here
    return WeeklyTrends.model_validate({"weeks": weeks}).model_dump(mode="json")
