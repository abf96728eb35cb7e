"""The FHIR export: an R4 (4.0.1) `Bundle` of type collection holding a Patient and vital-signs Observations.

- Respiratory rate, one Observation per RR segment: LOINC 9279-1, `valueQuantity` in UCUM `/min`,
  `effectivePeriod` from the segment's start to its end. Components: the protocol stage (1-4), the breath
  class (none/normal/heavy) and the noise probability, in Respira's own code system (no standard code
  describes what an audio model infers).
- Heart rate, one Observation per protocol pulse reading: LOINC 8867-4, UCUM `/min`, `effectiveDateTime`
  when the reading has a time, the protocol point and stage as components.

Every Observation has category `vital-signs`, status `final`, refers to the Patient by its `urn:uuid`
fullUrl, and carries a stable identifier (workout, stage, start), so a receiver can de-duplicate
repeated exports. The bundle is written as a stream.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from backend.domain import stage_of_point
from backend.exports.common import iso, iter_workouts, segment_times
from backend.models import PulseReading, Segment, Stage, User, Workout

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
RESPIRA_CODES = "urn:respira:fhir:component"  # component codes: stage, breath-class, noise-probability, ...
BREATH_CLASSES = "urn:respira:fhir:breath-class"
IDENTIFIERS = "urn:respira:observation"
PATIENT_IDENTIFIERS = "urn:respira:user"
NAMESPACE = uuid.UUID("6f1c1a52-5e3b-4d52-9d0f-1f3a0b6f9c21")  # uuid5 namespace of Respira's fullUrls

VITAL_SIGNS = {
    "coding": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}],
    "text": "Vital Signs",
}
RESPIRATORY_RATE = {
    "coding": [{"system": LOINC, "code": "9279-1", "display": "Respiratory rate"}],
    "text": "Respiratory rate",
}
HEART_RATE = {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}], "text": "Heart rate"}
BREATH_CLASS_DISPLAY = {
    "none": "No breathing heard",
    "normal": "Normal breathing",
    "heavy": "Heavy breathing",
}


def urn(name: str) -> str:
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, name)}"


def _code(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": RESPIRA_CODES, "code": code, "display": display}], "text": display}


def _per_minute(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": "/min"}


def _stage_component(stage: int) -> dict[str, Any]:
    return {
        "code": _code("protocol-stage", "Protocol stage (1 before, 2 during, 3-4 after)"),
        "valueInteger": stage,
    }


def _observation(code: dict[str, Any], patient: str, workout: Workout, key: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "identifier": [{"system": IDENTIFIERS, "value": key}],
        "status": "final",
        "category": [VITAL_SIGNS],
        "code": code,
        "subject": {"reference": patient},
        "device": {"display": f"{workout.device or 'Respira'} ({workout.model_version})"},
    }


def segment_observation(workout: Workout, stage: Stage, seg: Segment, patient: str) -> dict[str, Any]:
    start, end = segment_times(stage, seg.start_s, seg.duration_s)
    offset = workout.utc_offset_min
    observation = _observation(
        RESPIRATORY_RATE, patient, workout, f"{workout.uuid}/stage-{stage.stage}/{seg.start_s!r}"
    )
    components = [_stage_component(stage.stage)]
    if seg.breath_class is not None:
        concept = {
            "system": BREATH_CLASSES,
            "code": seg.breath_class,
            "display": BREATH_CLASS_DISPLAY[seg.breath_class],
        }
        components.append(
            {"code": _code("breath-class", "Breath class"), "valueCodeableConcept": {"coding": [concept]}}
        )
    if seg.noise_prob is not None:
        components.append(
            {
                "code": _code("noise-probability", "Probability that the audio is noisy"),
                "valueQuantity": {
                    "value": seg.noise_prob,
                    "unit": "probability",
                    "system": UCUM,
                    "code": "1",
                },
            }
        )
    observation |= {
        "effectivePeriod": {"start": iso(start, offset), "end": iso(end, offset)},
        "valueQuantity": _per_minute(seg.rr_bpm, "breaths/minute"),
        "component": components,
    }
    return observation


def pulse_observation(workout: Workout, reading: PulseReading, patient: str) -> dict[str, Any]:
    observation = _observation(HEART_RATE, patient, workout, f"{workout.uuid}/pulse/{reading.point}")
    if reading.measured_at is not None:
        observation["effectiveDateTime"] = iso(reading.measured_at, workout.utc_offset_min)
    observation |= {
        "valueQuantity": _per_minute(reading.bpm, "beats/minute"),
        "component": [
            _stage_component(stage_of_point(reading.point)),
            {"code": _code("protocol-point", "Protocol pulse point"), "valueString": reading.point},
        ],
    }
    return observation


def _entry(full_url: str, resource: dict[str, Any]) -> str:
    return json.dumps({"fullUrl": full_url, "resource": resource}, ensure_ascii=False)


def iter_bundle(session: Session, user_id: int, now: datetime) -> Iterator[str]:
    user = session.get(User, user_id)
    patient_url = urn(f"user/{user_id}")
    head = {"resourceType": "Bundle", "type": "collection", "timestamp": now.isoformat()}
    yield json.dumps(head)[:-1] + ',\n "entry": [\n  '
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": PATIENT_IDENTIFIERS, "value": user.name if user else str(user_id)}],
    }
    yield _entry(patient_url, patient)
    for workout in iter_workouts(session, user_id):
        for stage in workout.stages:
            for seg in stage.segments:
                resource = segment_observation(workout, stage, seg, patient_url)
                yield ",\n  " + _entry(urn(resource["identifier"][0]["value"]), resource)
        for reading in workout.pulse_readings:
            resource = pulse_observation(workout, reading, patient_url)
            yield ",\n  " + _entry(urn(resource["identifier"][0]["value"]), resource)
    yield "\n ]\n}\n"
