"""The FHIR export: an R4 (4.0.1) `Bundle` of type collection holding a Patient and Observations.

Vital signs follow the R4 vital-signs profiles and name them in `meta.profile`:

- Respiratory rate (profile resprate, LOINC 9279-1, UCUM `/min`): one per RR segment (`effectivePeriod`
  from the segment's start to its end; components: protocol stage, breath class and noise probability in
  Respira's own code system, since no standard code describes what an audio model infers; the
  estimator's `rr_confidence` as a component `rr-confidence`, UCUM `1`, when the app sent one) and one
  per imported respiratory-rate sample. A reading without a rate has no `valueQuantity` but a
  `dataAbsentReason` (vs-2): `unknown` of HL7's data-absent-reason code system beside Respira's own
  code for the reason (`no_breathing`, `too_noisy`), with the reason as text.
- Heart rate (profile heartrate, LOINC 8867-4, `/min`): one per protocol pulse reading (components:
  stage and protocol point) and one per imported heart-rate sample (with its minimum and maximum as
  components when the app sent them). Resting heart rate adds LOINC 40443-4 and walking heart-rate
  average Apple's HealthKit identifier beside 8867-4, so both remain heart-rate vital signs.
- HRV SDNN (profile vitalsigns, LOINC 80404-7, UCUM `ms`).

The profiles require an effective time. A pulse reading sent without its own time gets the time of its
protocol point: `before_N` the start of stage N, `after_N` its end (start + duration_s), or the workout's
start when that stage is not stored; a `note` on the Observation says so.

Not vital signs (category `activity`, no profile): VO2 max (no LOINC code exists: Apple's HealthKit
identifier, UCUM `mL/kg/min`) and health-app workouts (LOINC 73985-4 Exercise activity, the activity as
text, `effectivePeriod`, components 55411-3 Exercise duration and heart rate average/min/max).

Every Observation has status `final`, refers to the Patient by its `urn:uuid` fullUrl, and carries a
stable identifier, so a receiver can de-duplicate repeated exports. The bundle is written as a stream.
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
from backend.imports.records import MARKERS
from backend.models import (
    FitnessMarker,
    HealthSample,
    HealthWorkout,
    PulseReading,
    Segment,
    Stage,
    User,
    Workout,
)

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
HEALTHKIT = "http://developer.apple.com/documentation/healthkit"  # Apple's identifiers, as a code system
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
RESPIRA_CODES = "urn:respira:fhir:component"  # component codes: stage, breath-class, noise-probability, ...
BREATH_CLASSES = "urn:respira:fhir:breath-class"
NO_RATE_REASONS = "urn:respira:fhir:no-rate-reason"
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
IDENTIFIERS = "urn:respira:observation"
PATIENT_IDENTIFIERS = "urn:respira:user"
NAMESPACE = uuid.UUID("6f1c1a52-5e3b-4d52-9d0f-1f3a0b6f9c21")  # uuid5 namespace of Respira's fullUrls

PROFILES = "http://hl7.org/fhir/StructureDefinition/"
VITAL_SIGNS_PROFILE = PROFILES + "vitalsigns"
HEART_RATE_PROFILE = PROFILES + "heartrate"
RESPIRATORY_RATE_PROFILE = PROFILES + "resprate"


def _category(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": OBSERVATION_CATEGORY, "code": code, "display": display}], "text": display}


VITAL_SIGNS = _category("vital-signs", "Vital Signs")
ACTIVITY = _category("activity", "Activity")


def _loinc(code: str, display: str) -> dict[str, Any]:
    return {"system": LOINC, "code": code, "display": display}


RESPIRATORY_RATE = {"coding": [_loinc("9279-1", "Respiratory rate")], "text": "Respiratory rate"}
HEART_RATE = {"coding": [_loinc("8867-4", "Heart rate")], "text": "Heart rate"}
# Fitness markers: (code, profile, category, UCUM unit)
MARKER_CODES: dict[str, tuple[dict[str, Any], str | None, dict[str, Any]]] = {
    "resting_heart_rate": (
        {
            "coding": [_loinc("8867-4", "Heart rate"), _loinc("40443-4", "Heart rate --resting")],
            "text": "Resting heart rate",
        },
        HEART_RATE_PROFILE,
        VITAL_SIGNS,
    ),
    "walking_heart_rate_average": (
        {
            "coding": [
                _loinc("8867-4", "Heart rate"),
                {
                    "system": HEALTHKIT,
                    "code": "HKQuantityTypeIdentifierWalkingHeartRateAverage",
                    "display": "Walking heart rate average",
                },
            ],
            "text": "Walking heart-rate average",
        },
        HEART_RATE_PROFILE,
        VITAL_SIGNS,
    ),
    "hrv_sdnn": (
        {
            "coding": [_loinc("80404-7", "R-R interval.standard deviation (Heart rate variability)")],
            "text": "Heart-rate variability (SDNN)",
        },
        VITAL_SIGNS_PROFILE,
        VITAL_SIGNS,
    ),
    "vo2_max": (
        {
            "coding": [{"system": HEALTHKIT, "code": "HKQuantityTypeIdentifierVO2Max", "display": "VO2 max"}],
            "text": "VO2 max",
        },
        None,
        ACTIVITY,
    ),
}
EXERCISE_ACTIVITY = {"coding": [_loinc("73985-4", "Exercise activity")], "text": "Exercise activity"}
EXERCISE_DURATION = {"coding": [_loinc("55411-3", "Exercise duration")], "text": "Exercise duration"}
NO_RATE_DISPLAY = {"no_breathing": "No breathing heard", "too_noisy": "Too noisy to tell"}
BREATH_CLASS_DISPLAY = {
    "none": "No breathing heard",
    "normal": "Normal breathing",
    "heavy": "Heavy breathing",
}


def urn(name: str) -> str:
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, name)}"


def _code(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": RESPIRA_CODES, "code": code, "display": display}], "text": display}


def _quantity(value: float, unit: str, ucum: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": ucum}


def _per_minute(value: float, unit: str) -> dict[str, Any]:
    return _quantity(value, unit, "/min")


def _stage_component(stage: int) -> dict[str, Any]:
    return {
        "code": _code("protocol-stage", "Protocol stage (1 before, 2 during, 3-4 after)"),
        "valueInteger": stage,
    }


def _observation(
    code: dict[str, Any],
    patient: str,
    key: str,
    device: str,
    *,
    profile: str | None,
    category: dict[str, Any] = VITAL_SIGNS,
) -> dict[str, Any]:
    observation: dict[str, Any] = {"resourceType": "Observation"}
    if profile is not None:
        observation["meta"] = {"profile": [profile]}
    return observation | {
        "identifier": [{"system": IDENTIFIERS, "value": key}],
        "status": "final",
        "category": [category],
        "code": code,
        "subject": {"reference": patient},
        "device": {"display": device},
    }


def _effective(start: datetime, end: datetime, offset_min: int = 0) -> dict[str, Any]:
    if end > start:
        return {"effectivePeriod": {"start": iso(start, offset_min), "end": iso(end, offset_min)}}
    return {"effectiveDateTime": iso(start, offset_min)}


def _respira_device(workout: Workout) -> str:
    return f"{workout.device or 'Respira'} ({workout.model_version})"


def segment_observation(workout: Workout, stage: Stage, seg: Segment, patient: str) -> dict[str, Any]:
    start, end = segment_times(stage, seg.start_s, seg.duration_s)
    offset = workout.utc_offset_min
    observation = _observation(
        RESPIRATORY_RATE,
        patient,
        f"{workout.uuid}/stage-{stage.stage}/{seg.start_s!r}",
        _respira_device(workout),
        profile=RESPIRATORY_RATE_PROFILE,
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
                "valueQuantity": _quantity(seg.noise_prob, "probability", "1"),
            }
        )
    if seg.rr_confidence is not None:
        components.append(
            {
                "code": _code("rr-confidence", "How far the estimator stands behind the rate (0-1)"),
                "valueQuantity": _quantity(seg.rr_confidence, "probability", "1"),
            }
        )
    observation["effectivePeriod"] = {"start": iso(start, offset), "end": iso(end, offset)}
    if seg.rr_bpm is not None:
        observation["valueQuantity"] = _per_minute(seg.rr_bpm, "breaths/minute")
    else:
        observation["dataAbsentReason"] = _absent(seg.reason or "")
    observation["component"] = components
    return observation


def _absent(reason: str) -> dict[str, Any]:
    """A dataAbsentReason for a reading without a rate: HL7's `unknown` (the rate exists, the audio did
    not let the estimator tell it) beside Respira's code for why."""
    display = NO_RATE_DISPLAY.get(reason, reason)
    return {
        "coding": [
            {"system": DATA_ABSENT_REASON, "code": "unknown", "display": "Unknown"},
            {"system": NO_RATE_REASONS, "code": reason, "display": display},
        ],
        "text": display,
    }


def pulse_observation(workout: Workout, reading: PulseReading, patient: str) -> dict[str, Any]:
    observation = _observation(
        HEART_RATE,
        patient,
        f"{workout.uuid}/pulse/{reading.point}",
        _respira_device(workout),
        profile=HEART_RATE_PROFILE,
    )
    if reading.measured_at is not None:
        observation["effectiveDateTime"] = iso(reading.measured_at, workout.utc_offset_min)
    else:  # the profile requires a time: the protocol point's (docs/interop.md)
        moment, how = protocol_time(workout, reading.point)
        observation["effectiveDateTime"] = iso(moment, workout.utc_offset_min)
        observation["note"] = [{"text": f"Sent without its own time: the time of {reading.point}, {how}."}]
    observation |= {
        "valueQuantity": _per_minute(reading.bpm, "beats/minute"),
        "component": [
            _stage_component(stage_of_point(reading.point)),
            {"code": _code("protocol-point", "Protocol pulse point"), "valueString": reading.point},
        ],
    }
    return observation


def sample_observation(sample: HealthSample, workout_uuid: uuid.UUID | None, patient: str) -> dict[str, Any]:
    heart = sample.kind == "heart_rate"
    key = f"sample/{sample.kind}/{sample.started_at.isoformat()}/{sample.source}"
    observation = _observation(
        HEART_RATE if heart else RESPIRATORY_RATE,
        patient,
        key,
        sample.source,
        profile=HEART_RATE_PROFILE if heart else RESPIRATORY_RATE_PROFILE,
    )
    unit = "beats/minute" if heart else "breaths/minute"
    observation |= _effective(sample.started_at, sample.ended_at)
    observation["valueQuantity"] = _per_minute(sample.bpm, unit)
    components = [
        {
            "code": _code(f"{name}-{sample.kind.replace('_', '-')}", f"{label} over the interval"),
            "valueQuantity": _per_minute(value, unit),
        }
        for name, label, value in (
            ("minimum", "Minimum", sample.bpm_min),
            ("maximum", "Maximum", sample.bpm_max),
        )
        if value is not None
    ]
    if components:
        observation["component"] = components
    if workout_uuid is not None:
        observation["note"] = [{"text": f"Recorded during Respira workout {workout_uuid}."}]
    return observation


def marker_observation(marker: FitnessMarker, patient: str) -> dict[str, Any]:
    code, profile, category = MARKER_CODES[marker.kind]
    unit = MARKERS[marker.kind]
    observation = _observation(
        code,
        patient,
        f"marker/{marker.kind}/{marker.started_at.isoformat()}/{marker.source}",
        marker.source,
        profile=profile,
        category=category,
    )
    return (
        observation
        | _effective(marker.started_at, marker.ended_at)
        | {"valueQuantity": _quantity(marker.value, unit.unit, unit.ucum)}
    )


def health_workout_observation(
    hw: HealthWorkout, workout_uuid: uuid.UUID | None, patient: str
) -> dict[str, Any]:
    observation = _observation(
        EXERCISE_ACTIVITY,
        patient,
        f"health-workout/{hw.started_at.isoformat()}/{hw.source}",
        hw.source,
        profile=None,
        category=ACTIVITY,
    )
    minutes = (hw.ended_at - hw.started_at).total_seconds() / 60
    components: list[dict[str, Any]] = [
        {"code": EXERCISE_DURATION, "valueQuantity": _quantity(round(minutes, 3), "min", "min")}
    ]
    for name, label, value in (
        ("heart-rate-average", "Average heart rate", hw.hr_avg_bpm),
        ("heart-rate-minimum", "Minimum heart rate", hw.hr_min_bpm),
        ("heart-rate-maximum", "Maximum heart rate", hw.hr_max_bpm),
    ):
        if value is not None:
            components.append(
                {"code": _code(name, label), "valueQuantity": _per_minute(value, "beats/minute")}
            )
    if hw.indoor is not None:
        components.append({"code": _code("indoor", "Indoor workout"), "valueBoolean": hw.indoor})
    observation |= {
        "effectivePeriod": {"start": iso(hw.started_at), "end": iso(hw.ended_at)},
        "valueCodeableConcept": {"text": hw.activity_type},
        "component": components,
    }
    if workout_uuid is not None:
        observation["note"] = [{"text": f"Overlaps Respira workout {workout_uuid}."}]
    return observation


def _entry(full_url: str, resource: dict[str, Any]) -> str:
    return json.dumps({"fullUrl": full_url, "resource": resource}, ensure_ascii=False)


def _resources(
    session: Session, user_id: int, patient_url: str, since: datetime | None
) -> Iterator[dict[str, Any]]:
    for workout in iter_workouts(session, user_id, since=since):
        for stage in workout.stages:
            for seg in stage.segments:
                yield segment_observation(workout, stage, seg, patient_url)
        for reading in workout.pulse_readings:
            yield pulse_observation(workout, reading, patient_url)
    for sample, workout_uuid in iter_samples(session, user_id, since):
        yield sample_observation(sample, workout_uuid, patient_url)
    for marker in iter_markers(session, user_id, since):
        yield marker_observation(marker, patient_url)
    for hw, workout_uuid in iter_health_workouts(session, user_id, since):
        yield health_workout_observation(hw, workout_uuid, patient_url)


def iter_bundle(
    session: Session, user_id: int, now: datetime, since: datetime | None = None
) -> Iterator[str]:
    user = session.get(User, user_id)
    patient_url = urn(f"user/{user_id}")
    head = {"resourceType": "Bundle", "type": "collection", "timestamp": now.isoformat()}
    yield json.dumps(head)[:-1] + ',\n "entry": [\n  '
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": PATIENT_IDENTIFIERS, "value": user.name if user else str(user_id)}],
    }
    yield _entry(patient_url, patient)
    for resource in _resources(session, user_id, patient_url, since):
        yield ",\n  " + _entry(urn(resource["identifier"][0]["value"]), resource)
    yield "\n ]\n}\n"
