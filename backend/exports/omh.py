"""The Open mHealth export: a JSON array of data points, each a header and a body of one OMH schema.

    omh:respiratory-rate:2.0    each RR segment, and each imported respiratory-rate sample
    omh:heart-rate:2.0          each protocol pulse reading, each imported heart-rate sample, resting
                                heart rate (`at rest`) and walking heart-rate average (`active`, average)
    omh:rr-interval:1.0         HRV SDNN, as the `standard deviation` of R-R intervals in ms
    omh:physical-activity:1.2   each health-app workout (activity name and time interval)

VO2 max has no Open mHealth schema and is not in this export (it is in json, csv and fhir).

A reading without a rate (`rr_bpm` null, issue 19) is left out: omh:respiratory-rate:2.0 requires a
`respiratory_rate` value and has no "absent" form. The schema has no place for the estimator's
`rr_confidence` either, so these points do not carry it (the json, csv and fhir exports do).

Respira's own records: `temporal_relationship_to_physical_activity` comes from the protocol stage
(stage 1 "before exercise", 2 "during exercise", 3 and 4 "after exercise"); times are on the workout's
own clock; a pulse reading sent without a time gets its protocol point's time, as in the FHIR export.
Header ids are stable (uuid5 of what the point is), and `creation_date_time` is when the record was
first stored, so repeated exports agree.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from backend.domain import stage_of_point
from backend.exports.common import (
    iso,
    iter_health_workouts,
    iter_markers,
    iter_samples,
    iter_workouts,
    protocol_time,
    segment_times,
)
from backend.models import FitnessMarker, HealthSample, HealthWorkout, PulseReading, Segment, Stage, Workout

NAMESPACE = uuid.UUID("0b7d6a34-3c1e-4f0e-8d59-5a1f2b3c4d5e")  # uuid5 namespace of data point ids
SCHEMA_ID = {"namespace": "omh", "name": "respiratory-rate", "version": "2.0"}
HEART_RATE_SCHEMA = {"namespace": "omh", "name": "heart-rate", "version": "2.0"}
RR_INTERVAL_SCHEMA = {"namespace": "omh", "name": "rr-interval", "version": "1.0"}
PHYSICAL_ACTIVITY_SCHEMA = {"namespace": "omh", "name": "physical-activity", "version": "1.2"}
RELATIONSHIP = {1: "before exercise", 2: "during exercise", 3: "after exercise", 4: "after exercise"}


def _header(key: str, created: datetime, schema: dict[str, str], source: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid5(NAMESPACE, key)),
        "creation_date_time": iso(created),
        "schema_id": schema,
        "acquisition_provenance": {"source_name": source, "modality": "sensed"},
    }


def _time_frame(start: datetime, end: datetime, offset_min: int = 0) -> dict[str, Any]:
    if end > start:
        return {
            "time_interval": {
                "start_date_time": iso(start, offset_min),
                "end_date_time": iso(end, offset_min),
            }
        }
    return {"date_time": iso(start, offset_min)}


def data_point(workout: Workout, stage: Stage, seg: Segment) -> dict[str, Any]:
    start, end = segment_times(stage, seg.start_s, seg.duration_s)
    key = f"{workout.uuid}/stage-{stage.stage}/{seg.start_s!r}"
    return {
        "header": _header(key, workout.created_at, SCHEMA_ID, f"Respira {workout.model_version}"),
        "body": {
            "respiratory_rate": {"value": seg.rr_bpm, "unit": "breaths/min"},
            "effective_time_frame": _time_frame(start, end, workout.utc_offset_min),
            "temporal_relationship_to_physical_activity": RELATIONSHIP[stage.stage],
        },
    }


def pulse_point(workout: Workout, reading: PulseReading) -> dict[str, Any]:
    moment = reading.measured_at or protocol_time(workout, reading.point)[0]
    key = f"{workout.uuid}/pulse/{reading.point}"
    return {
        "header": _header(key, workout.created_at, HEART_RATE_SCHEMA, f"Respira {workout.model_version}"),
        "body": {
            "heart_rate": {"value": reading.bpm, "unit": "beats/min"},
            "effective_time_frame": {"date_time": iso(moment, workout.utc_offset_min)},
            "temporal_relationship_to_physical_activity": RELATIONSHIP[stage_of_point(reading.point)],
        },
    }


def sample_point(sample: HealthSample) -> dict[str, Any]:
    heart = sample.kind == "heart_rate"
    key = f"sample/{sample.kind}/{sample.started_at.isoformat()}/{sample.source}"
    body: dict[str, Any] = {
        ("heart_rate" if heart else "respiratory_rate"): {
            "value": sample.bpm,
            "unit": "beats/min" if heart else "breaths/min",
        },
        "effective_time_frame": _time_frame(sample.started_at, sample.ended_at),
    }
    if sample.bpm_min is not None or sample.bpm_max is not None:
        body["descriptive_statistic"] = "average"  # Health Auto Export's per-minute Avg
    schema = HEART_RATE_SCHEMA if heart else SCHEMA_ID
    return {"header": _header(key, sample.created_at, schema, sample.source), "body": body}


def marker_point(marker: FitnessMarker) -> dict[str, Any] | None:
    """The data point of a fitness marker, or None for VO2 max (no Open mHealth schema)."""
    key = f"marker/{marker.kind}/{marker.started_at.isoformat()}/{marker.source}"
    time_frame = _time_frame(marker.started_at, marker.ended_at)
    if marker.kind == "hrv_sdnn":
        schema = RR_INTERVAL_SCHEMA
        body: dict[str, Any] = {
            "rr_interval": {"value": marker.value, "unit": "ms"},
            "effective_time_frame": time_frame,
            "descriptive_statistic": "standard deviation",
        }
    elif marker.kind == "resting_heart_rate":
        schema = HEART_RATE_SCHEMA
        body = {
            "heart_rate": {"value": marker.value, "unit": "beats/min"},
            "effective_time_frame": time_frame,
            "temporal_relationship_to_physical_activity": "at rest",
        }
    elif marker.kind == "walking_heart_rate_average":
        schema = HEART_RATE_SCHEMA
        body = {
            "heart_rate": {"value": marker.value, "unit": "beats/min"},
            "effective_time_frame": time_frame,
            "descriptive_statistic": "average",
            "temporal_relationship_to_physical_activity": "active",
        }
    else:
        return None
    return {"header": _header(key, marker.created_at, schema, marker.source), "body": body}


def activity_point(hw: HealthWorkout) -> dict[str, Any]:
    key = f"health-workout/{hw.started_at.isoformat()}/{hw.source}"
    return {
        "header": _header(key, hw.created_at, PHYSICAL_ACTIVITY_SCHEMA, hw.source),
        "body": {
            "activity_name": hw.activity_type,
            "effective_time_frame": _time_frame(hw.started_at, hw.ended_at),
        },
    }


def _points(session: Session, user_id: int, since: datetime | None) -> Iterator[dict[str, Any]]:
    for workout in iter_workouts(session, user_id, since=since):
        for stage in workout.stages:
            for seg in stage.segments:
                if seg.rr_bpm is not None:  # no rate: no data point (module doc)
                    yield data_point(workout, stage, seg)
        for reading in workout.pulse_readings:
            yield pulse_point(workout, reading)
    for sample, _ in iter_samples(session, user_id, since):
        yield sample_point(sample)
    for marker in iter_markers(session, user_id, since):
        if (point := marker_point(marker)) is not None:
            yield point
    for hw, _ in iter_health_workouts(session, user_id, since):
        yield activity_point(hw)


def iter_data_points(
    session: Session, user_id: int, now: datetime, since: datetime | None = None
) -> Iterator[str]:
    separator = "[\n  "
    for point in _points(session, user_id, since):
        yield separator + json.dumps(point, ensure_ascii=False)
        separator = ",\n  "
    yield "[]\n" if separator.startswith("[") else "\n]\n"
