"""Stage summaries: per workout and stage, the numbers the trends read (median RR, counts, pulse).

Why they exist: without them every trends request re-ranks every segment of the user's history. They are
derived data, so they are rewritten from the stored truth in the very transaction that changes it:

- a whole workout (PUT, JSON restore) writes them from the validated body, without reading anything back;
- appends (segments, pulse) and pulse points filled by an import `refresh` them from the stored rows;
- deleting a workout or an account removes them with ON DELETE CASCADE.

Only confident readings count toward the median (backend.domain: a rate with no confidence or one of
at least RR_CONFIDENCE_MIN); the readings left out are counted (`no_rate_count`, `low_confidence_count`),
and a stage with fewer than MIN_CONFIDENT_READINGS confident readings has no median (issue 19).

A workout has a row for every stage it stores and for every stage one of its pulse points belongs to
(before_3 may be read although stage 3 was not recorded). The median is the middle value, or the mean of
the two middle values: the same rule, in the same float arithmetic, as the SQL of migration 0005
(backfill) and as the per-request SQL the trends used before.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backend import domain
from backend.db import bulk_insert, table_of
from backend.domain import BreathClass, is_confident, stage_of_point
from backend.models import PulseReading, Segment, Stage, StageSummary, Workout

HEAVY = BreathClass.heavy.value


class Reading(NamedTuple):
    """What a summary needs of one segment."""

    rr_bpm: float | None
    rr_confidence: float | None
    breath_class: str | None


def median(values: Sequence[float]) -> float | None:
    """The middle value, or the mean of the two middle ones; None for no values."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None
    if n % 2:
        return ordered[n // 2]
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def stage_rr(segments: Sequence[Reading]) -> dict[str, Any]:
    """The stage's median RR under the confidence rule, and the readings it left out."""
    confident = [
        seg.rr_bpm
        for seg in segments
        if seg.rr_bpm is not None and is_confident(seg.rr_bpm, seg.rr_confidence)
    ]
    no_rate = sum(1 for seg in segments if seg.rr_bpm is None)
    enough = len(confident) >= domain.MIN_CONFIDENT_READINGS
    return {
        "rr_median_bpm": median(confident) if enough else None,
        "no_rate_count": no_rate,
        "low_confidence_count": len(segments) - no_rate - len(confident),
    }


def stage_row(
    workout_id: int,
    user_id: int,
    stage: int,
    segments: Sequence[Reading],
    pulse_bpm_by_point: Mapping[str, float],
) -> dict[str, Any]:
    """The summary row of one stage from its segments and the workout's pulse."""
    before = pulse_bpm_by_point.get(f"before_{stage}")
    after = pulse_bpm_by_point.get(f"after_{stage}")
    points = [bpm for bpm in (before, after) if bpm is not None]
    return {
        "workout_id": workout_id,
        "stage": stage,
        "user_id": user_id,
        "segment_count": len(segments),
        **stage_rr(segments),
        "classified_count": sum(1 for seg in segments if seg.breath_class is not None),
        "heavy_count": sum(1 for seg in segments if seg.breath_class == HEAVY),
        "pulse_before_bpm": before,
        "pulse_after_bpm": after,
        "pulse_bpm": None if not points else points[0] if len(points) == 1 else (points[0] + points[1]) / 2,
    }


def workout_rows(
    workout_id: int,
    user_id: int,
    segments_by_stage: Mapping[int, Sequence[Reading]],
    pulse_bpm_by_point: Mapping[str, float],
) -> list[dict[str, Any]]:
    """Summary rows of a workout: `segments_by_stage` names every stored stage (empty ones too)."""
    stages = set(segments_by_stage) | {stage_of_point(p) for p in pulse_bpm_by_point}
    return [
        stage_row(workout_id, user_id, n, segments_by_stage.get(n, ()), pulse_bpm_by_point)
        for n in sorted(stages)
    ]


def insert_rows(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    bulk_insert(session.connection(), table_of(StageSummary), list(rows))


def delete_rows(session: Session, workout_id: int) -> None:
    table = table_of(StageSummary)
    session.connection().execute(delete(table).where(table.c.workout_id == workout_id))


def stored_rows(session: Session, workout_id: int) -> list[dict[str, Any]]:
    """Recompute a workout's summary rows from its stored stages, segments and pulse readings."""
    segments: dict[int, list[Reading]] = defaultdict(list)
    query = (
        select(Stage.stage, Segment.id, Segment.rr_bpm, Segment.rr_confidence, Segment.breath_class)
        .outerjoin(Segment, Segment.stage_id == Stage.id)
        .where(Stage.workout_id == workout_id)
    )
    for stage, segment_id, rr_bpm, rr_confidence, breath_class in session.execute(query):
        bucket = segments[stage]  # a stage without segments still gets its (empty) entry
        if segment_id is not None:
            bucket.append(Reading(rr_bpm, rr_confidence, breath_class))
    readings = select(PulseReading.point, PulseReading.bpm).where(PulseReading.workout_id == workout_id)
    pulse = {point: bpm for point, bpm in session.execute(readings)}
    user_id = session.execute(select(Workout.user_id).where(Workout.id == workout_id)).scalar_one()
    return workout_rows(workout_id, user_id, segments, pulse)


def refresh(session: Session, workout_ids: Iterable[int]) -> None:
    """Rewrite the summaries of these workouts from what is stored (after appends, filled pulse)."""
    for workout_id in workout_ids:
        rows = stored_rows(session, workout_id)
        delete_rows(session, workout_id)
        insert_rows(session, rows)
