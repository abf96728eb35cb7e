"""The Open mHealth export: one `omh:respiratory-rate:2.0` data point per RR segment, as a JSON array.

`temporal_relationship_to_physical_activity` comes from the protocol stage: stage 1 "before exercise",
stage 2 "during exercise", stages 3 and 4 "after exercise". The effective time frame is the segment's
interval on the workout's own clock. Header ids are stable (derived from workout, stage and start), and
`creation_date_time` is when the workout was first stored, so repeated exports agree.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from backend.exports.common import iso, iter_workouts, segment_times
from backend.models import Segment, Stage, Workout

NAMESPACE = uuid.UUID("0b7d6a34-3c1e-4f0e-8d59-5a1f2b3c4d5e")  # uuid5 namespace of data point ids
SCHEMA_ID = {"namespace": "omh", "name": "respiratory-rate", "version": "2.0"}
RELATIONSHIP = {1: "before exercise", 2: "during exercise", 3: "after exercise", 4: "after exercise"}


def data_point(workout: Workout, stage: Stage, seg: Segment) -> dict[str, Any]:
    start, end = segment_times(stage, seg.start_s, seg.duration_s)
    offset = workout.utc_offset_min
    key = f"{workout.uuid}/stage-{stage.stage}/{seg.start_s!r}"
    return {
        "header": {
            "id": str(uuid.uuid5(NAMESPACE, key)),
            "creation_date_time": iso(workout.created_at),
            "schema_id": SCHEMA_ID,
            "acquisition_provenance": {
                "source_name": f"Respira {workout.model_version}",
                "modality": "sensed",
            },
        },
        "body": {
            "respiratory_rate": {"value": seg.rr_bpm, "unit": "breaths/min"},
            "effective_time_frame": {
                "time_interval": {"start_date_time": iso(start, offset), "end_date_time": iso(end, offset)}
            },
            "temporal_relationship_to_physical_activity": RELATIONSHIP[stage.stage],
        },
    }


def iter_data_points(session: Session, user_id: int, now: datetime) -> Iterator[str]:
    separator = "[\n  "
    for workout in iter_workouts(session, user_id):
        for stage in workout.stages:
            for seg in stage.segments:
                yield separator + json.dumps(data_point(workout, stage, seg), ensure_ascii=False)
                separator = ",\n  "
    yield "[]\n" if separator.startswith("[") else "\n]\n"
