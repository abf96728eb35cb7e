"""The CSV export: one row per record, RFC 4180 quoting; columns that do not apply to a row are empty.

`record` says what a row is:
    segment, pulse          Respira's RR segments and pulse readings, with workout and stage columns
                            (a segment without a rate has `rr_bpm` empty and its `reason`; its
                            `rr_confidence` when the app sent one)
    heart_rate, respiratory_rate
                            samples imported from health apps (`value` per minute, `value_min`/`value_max`
                            when the app sent them, `workout_id` when recorded during a workout)
    resting_heart_rate, hrv_sdnn, vo2_max, walking_heart_rate_average
                            fitness markers (`value` in `unit`, `local_date` on the app's clock)
    health_workout          workouts recorded by health apps (`activity_type`, `indoor`, heart rate
                            average/min/max as `value`/`value_min`/`value_max`, `workout_id` when linked)

Every time is UTC in one fixed shape, `2026-11-28T17:00:00.000000Z`, so
`pandas.read_csv(..., parse_dates=[...])` gives datetime64[ns, UTC] columns without `utc=True` (mixed
offsets would leave text). The workout's own clock is in `workout_utc_offset_min`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from backend.domain import stage_of_point
from backend.exports.common import (
    iter_health_workouts,
    iter_markers,
    iter_samples,
    iter_workouts,
    segment_times,
    utc_iso,
)
from backend.imports.records import MARKERS
from backend.models import Workout
from backend.workouts import PULSE_ORDER

SAMPLE_UNITS = {"heart_rate": "beats/min", "respiratory_rate": "breaths/min"}

COLUMNS = (
    "record",
    "workout_id",
    "workout_started_at",
    "activity",
    "environment",
    "model_version",
    "device",
    "stage",
    "stage_started_at",
    "stage_duration_s",
    "start_s",
    "duration_s",
    "segment_started_at",
    "rr_bpm",
    "respiration_count",
    "breath_class",
    "prob_none",
    "prob_normal",
    "prob_heavy",
    "noise_prob",
    "pulse_point",
    "pulse_bpm",
    "pulse_measured_at",
    # Added with imported records (issue 16); the columns above keep their meaning.
    "workout_utc_offset_min",
    "started_at",
    "ended_at",
    "local_date",
    "value",
    "value_min",
    "value_max",
    "unit",
    "source",
    "activity_type",
    "indoor",
    # Added with confidence (issue 19): rr_bpm is empty for a reading without a rate, and reason says why.
    "rr_confidence",
    "reason",
)


def _workout_rows(writer: csv.DictWriter[str], workout: Workout) -> None:
    common = {
        "workout_id": str(workout.uuid),
        "workout_started_at": utc_iso(workout.started_at),
        "workout_utc_offset_min": workout.utc_offset_min,
        "activity": workout.activity,
        "environment": workout.environment,
        "model_version": workout.model_version,
        "device": workout.device or "",
    }
    stages = {stage.stage: stage for stage in workout.stages}
    for stage in workout.stages:
        stage_columns = {
            "stage": stage.stage,
            "stage_started_at": utc_iso(stage.started_at),
            "stage_duration_s": stage.duration_s,
        }
        for seg in stage.segments:
            writer.writerow(
                {
                    "record": "segment",
                    **common,
                    **stage_columns,
                    "start_s": seg.start_s,
                    "duration_s": seg.duration_s,
                    "segment_started_at": utc_iso(segment_times(stage, seg.start_s, seg.duration_s)[0]),
                    "rr_bpm": seg.rr_bpm,
                    "rr_confidence": seg.rr_confidence,
                    "reason": seg.reason,
                    "respiration_count": seg.respiration_count,
                    "breath_class": seg.breath_class,
                    "prob_none": seg.prob_none,
                    "prob_normal": seg.prob_normal,
                    "prob_heavy": seg.prob_heavy,
                    "noise_prob": seg.noise_prob,
                }
            )
    for reading in sorted(workout.pulse_readings, key=lambda r: PULSE_ORDER.index(r.point)):
        number = stage_of_point(reading.point)
        of_stage = stages.get(number)
        writer.writerow(
            {
                "record": "pulse",
                **common,
                "stage": number,
                "stage_started_at": utc_iso(of_stage.started_at) if of_stage else None,
                "stage_duration_s": of_stage.duration_s if of_stage else None,
                "pulse_point": reading.point,
                "pulse_bpm": reading.bpm,
                "pulse_measured_at": utc_iso(reading.measured_at),
            }
        )


def _imported_rows(session: Session, user_id: int, since: datetime | None) -> Iterator[dict[str, Any]]:
    for sample, workout_uuid in iter_samples(session, user_id, since):
        yield {
            "record": sample.kind,
            "workout_id": str(workout_uuid) if workout_uuid else None,
            "started_at": utc_iso(sample.started_at),
            "ended_at": utc_iso(sample.ended_at),
            "value": sample.bpm,
            "value_min": sample.bpm_min,
            "value_max": sample.bpm_max,
            "unit": SAMPLE_UNITS[sample.kind],
            "source": sample.source,
        }
    for marker in iter_markers(session, user_id, since):
        yield {
            "record": marker.kind,
            "started_at": utc_iso(marker.started_at),
            "ended_at": utc_iso(marker.ended_at),
            "local_date": marker.local_date.isoformat(),
            "value": marker.value,
            "unit": MARKERS[marker.kind].unit,
            "source": marker.source,
        }
    for hw, workout_uuid in iter_health_workouts(session, user_id, since):
        heart_rate = (hw.hr_avg_bpm, hw.hr_min_bpm, hw.hr_max_bpm)
        yield {
            "record": "health_workout",
            "workout_id": str(workout_uuid) if workout_uuid else None,
            "started_at": utc_iso(hw.started_at),
            "ended_at": utc_iso(hw.ended_at),
            "value": hw.hr_avg_bpm,
            "value_min": hw.hr_min_bpm,
            "value_max": hw.hr_max_bpm,
            "unit": "beats/min" if any(v is not None for v in heart_rate) else None,
            "source": hw.source,
            "activity_type": hw.activity_type,
            "indoor": "" if hw.indoor is None else str(hw.indoor).lower(),
        }


def iter_csv(session: Session, user_id: int, now: datetime, since: datetime | None = None) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, restval="")
    writer.writeheader()

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    for workout in iter_workouts(session, user_id, since=since):
        _workout_rows(writer, workout)
        yield flush()
    for i, row in enumerate(_imported_rows(session, user_id, since), 1):
        writer.writerow(row)
        if i % 1000 == 0:
            yield flush()
    yield flush()
