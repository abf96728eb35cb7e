"""The CSV export: one row per RR segment and one per pulse reading, with workout and stage columns.

`record` says which a row is (segment or pulse); columns that do not apply are empty. Times are ISO 8601
on the workout's own clock; `segment_started_at` is the stage start plus `start_s`. RFC 4180 quoting.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy.orm import Session

from backend.domain import stage_of_point
from backend.exports.common import iso, iter_workouts, segment_times
from backend.workouts import PULSE_ORDER

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
)


def iter_csv(session: Session, user_id: int, now: datetime) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, restval="")
    writer.writeheader()
    for workout in iter_workouts(session, user_id):
        offset = workout.utc_offset_min
        common = {
            "workout_id": str(workout.uuid),
            "workout_started_at": iso(workout.started_at, offset),
            "activity": workout.activity,
            "environment": workout.environment,
            "model_version": workout.model_version,
            "device": workout.device or "",
        }
        stages = {stage.stage: stage for stage in workout.stages}
        for stage in workout.stages:
            stage_columns = {
                "stage": stage.stage,
                "stage_started_at": iso(stage.started_at, offset),
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
                        "segment_started_at": iso(
                            segment_times(stage, seg.start_s, seg.duration_s)[0], offset
                        ),
                        "rr_bpm": seg.rr_bpm,
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
            stage = stages.get(number)
            writer.writerow(
                {
                    "record": "pulse",
                    **common,
                    "stage": number,
                    "stage_started_at": iso(stage.started_at, offset) if stage else None,
                    "stage_duration_s": stage.duration_s if stage else None,
                    "pulse_point": reading.point,
                    "pulse_bpm": reading.bpm,
                    "pulse_measured_at": iso(reading.measured_at, offset),
                }
            )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()
