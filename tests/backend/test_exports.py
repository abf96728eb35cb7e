"""Exports: JSON (round trip into a new user gives equal data), CSV, FHIR R4 (validated by fhirclient's
R4 models and fhir.resources' R4B models), Open mHealth (validated against the respiratory-rate schema)."""

from __future__ import annotations

import copy
import csv
import io
import json
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas
import pytest
from api_helpers import Api, make_user, sample_workout, workout_url
from fhir.resources.R4B.bundle import Bundle as R4BBundle
from fhir_vital_signs import bundle_problems
from fhirclient.models.bundle import Bundle as R4Bundle
from fhirclient.models.fhirabstractbase import FHIRValidationError
from flask import Flask
from interop_helpers import count, db_of, full_shape_export, upload
from omh_validation import data_point_errors
from pydantic import ValidationError
from sqlalchemy import select

from backend.exports.csv_export import COLUMNS
from backend.exports.schemas import RespiraExport
from backend.imports.records import MARKERS
from backend.models import FitnessMarker, HealthSample, HealthWorkout, User, Workout

A = uuid.UUID("6a1f2e3d-4c5b-4a69-8877-665544332211")
B = uuid.UUID("0b9c8d7e-6f5a-4b3c-9d2e-1f0a9b8c7d6e")
PROBLEM = "application/problem+json"
HEARTRATE = "http://hl7.org/fhir/StructureDefinition/heartrate"


def seg(
    start_s: float, rr_bpm: float, breath_class: str | None = "normal", noise: float | None = 0.2
) -> dict[str, Any]:
    body: dict[str, Any] = {"start_s": start_s, "duration_s": 6.0, "rr_bpm": rr_bpm}
    if breath_class is not None:
        body |= {
            "breath_class": breath_class,
            "respiration_count": rr_bpm / 10,
            "breath_probs": [0.1, 0.8, 0.1],
        }
    if noise is not None:
        body["noise_prob"] = noise
    return body


def workout_b() -> dict[str, Any]:
    """A full protocol in Berlin (UTC+1), with missing optional fields and a pulse without a time."""
    return {
        "started_at": "2026-11-28T18:00:00+01:00",
        "activity": "hiit",
        "environment": "indoor",
        "model_version": "tclstm-2026.11",
        "device": "Alice's AirPods Pro",
        "stages": [
            {
                "stage": 1,
                "started_at": "2026-11-28T18:00:00+01:00",
                "segments": [seg(0, 13.5), seg(6, 14.0, None, None)],
            },
            {
                "stage": 2,
                "started_at": "2026-11-28T18:20:00+01:00",
                "segments": [seg(54, 41.0, "heavy", 0.45)],
            },
            {
                "stage": 3,
                "started_at": "2026-11-28T18:21:10+01:00",
                "duration_s": 45.0,
                "segments": [seg(0, 35.5, "heavy")],
            },
            {
                "stage": 4,
                "started_at": "2026-11-28T18:26:00+01:00",
                "segments": [seg(0, 22.0), seg(30.5, 19.0, "none")],
            },
        ],
        "pulse": [
            {"point": "before_1", "bpm": 72, "measured_at": "2026-11-28T17:59:40+01:00"},
            {"point": "after_3", "bpm": 158},
        ],
    }


MARKER_METRICS = [
    {
        "name": "resting_heart_rate",
        "units": "bpm",
        "data": [{"date": "2026-11-28 00:00:00 +0100", "qty": 55}],
    },
    {
        "name": "heart_rate_variability",
        "units": "ms",
        "data": [{"date": "2026-11-28 07:10:00 +0100", "qty": 41.5}],
    },
    {"name": "vo2_max", "units": "ml/(kg·min)", "data": [{"date": "2026-11-28 18:30:00 +0100", "qty": 45.2}]},
    {
        "name": "walking_heart_rate_average",
        "units": "bpm",
        "data": [{"date": "2026-11-28 00:00:00 +0100", "qty": 101}],
    },
]


def hae_push() -> dict[str, Any]:
    """Heart rate and RR around workout B, and the watch's own workout overlapping it."""
    return {
        "data": {
            "metrics": [
                {
                    "name": "heart_rate",
                    "units": "bpm",
                    "data": [
                        {"date": f"2026-11-28 {clock} +0100", "Min": bpm - 2, "Avg": bpm, "Max": bpm + 3}
                        for clock, bpm in (
                            ("18:20:00", 165),
                            ("18:26:10", 121),
                            ("18:27:00", 112),
                            ("22:00:00", 64),
                        )
                    ],
                },
                {
                    "name": "respiratory_rate",
                    "data": [
                        {
                            "date": "2026-11-29 3:10:00 am +0100",
                            "end": "2026-11-29 3:12:30 am +0100",
                            "qty": 13.0,
                        }
                    ],
                },
                *MARKER_METRICS,
            ],
            "workouts": [
                {
                    "name": "HIIT",
                    "start": "2026-11-28 6:02:00 pm +0100",
                    "end": "2026-11-28 6:21:00 pm +0100",
                    "location": "Indoor",
                }
            ],
        }
    }


@pytest.fixture
def alice_data(alice: Api) -> Api:
    assert alice.put(workout_url(A), json=sample_workout()).status_code == 201
    assert alice.put(workout_url(B), json=workout_b()).status_code == 201
    response = alice.post("/api/v1/imports/health-auto-export", json=hae_push())
    assert response.status_code == 201 and response.json["counts"]["pulse_filled"] == 4
    return alice


def export(api: Api, fmt: str) -> Any:
    response = api.get(f"/api/v1/export?format={fmt}")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    return response


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in ("exported_at", "user")}


def test_json_export_holds_everything_and_round_trips_into_a_new_user(alice_data: Api, app: Flask) -> None:
    document = export(alice_data, "json").json
    RespiraExport.model_validate_json(json.dumps(document))  # the import's own schema accepts it
    assert document["format"] == "respira-export" and document["user"] == {"name": "alice"}
    assert [w["id"] for w in document["workouts"]] == [str(A), str(B)]  # oldest first
    assert "created_at" not in document["workouts"][0]
    assert len(document["health_samples"]) == 5 and len(document["health_workouts"]) == 1
    assert {m["kind"]: m["value"] for m in document["fitness_markers"]} == {
        "hrv_sdnn": 41.5,
        "resting_heart_rate": 55,
        "vo2_max": 45.2,
        "walking_heart_rate_average": 101,
    }
    assert document["fitness_markers"][0]["local_date"] == "2026-11-28"
    assert {s["workout_id"] for s in document["health_samples"]} == {str(B), None}
    assert document["health_workouts"][0]["workout_id"] == str(B)
    b = document["workouts"][1]
    assert b["device"] == "Alice's AirPods Pro" and b["stages"][2]["duration_s"] == 45.0
    assert [p["point"] for p in b["pulse"]] == [
        "before_1",
        "before_2",
        "before_3",
        "after_3",
        "before_4",
        "after_4",
    ]

    carol_id, token = make_user(app, "carol", None)
    carol = Api(app, token, carol_id)
    restored = carol.post("/api/v1/imports/json", json=document)
    assert restored.status_code == 201, restored.json
    assert restored.json["kind"] == "json" and restored.json["counts"] == {
        "workouts_created": 2,
        "workouts_replaced": 0,
        "heart_rate_read": 4,
        "heart_rate_added": 4,
        "respiratory_rate_read": 1,
        "respiratory_rate_added": 1,
        "health_workouts_read": 1,
        "health_workouts_added": 1,
        **{f"{kind}_{step}": 1 for kind in MARKERS for step in ("read", "added")},
    }
    again = export(carol, "json").json
    assert again["user"] == {"name": "carol"}
    assert comparable(again) == comparable(document)

    # Importing it once more changes nothing, into Carol's account or back into Alice's.
    assert carol.post("/api/v1/imports/json", json=document).json["counts"]["heart_rate_added"] == 0
    assert alice_data.post("/api/v1/imports/json", json=document).json["counts"]["workouts_replaced"] == 2
    assert comparable(export(carol, "json").json) == comparable(document)
    assert comparable(export(alice_data, "json").json) == comparable(document)
    assert count(app, Workout) == 4 and count(app, HealthSample) == 10


def test_json_import_refuses_bad_documents_naming_the_field_and_stores_nothing(
    alice_data: Api, bob: Api, app: Flask
) -> None:
    document = export(alice_data, "json").json
    cases = [
        (
            ("workouts", 1, "stages", 0, "segments", 0, "rr_bpm"),
            99,
            "workouts[1].stages[0].segments[0].rr_bpm",
        ),
        (
            ("workouts", 0, "stages", 0, "segments", 1, "start_s"),
            70.0,
            "workouts[0].stages[0].segments[1].start_s",
        ),
        (("health_samples", 0, "workout_id"), str(uuid.uuid4()), "health_samples[0].workout_id"),
        (("health_samples", 1, "bpm"), 400.0, "health_samples[1].bpm"),
        (("format",), "something-else", "format"),
        (("workouts", 0, "color"), "red", "workouts[0].color"),
    ]
    for path, value, field in cases:
        bad = copy.deepcopy(document)
        target = bad
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        response = bob.post("/api/v1/imports/json", json=bad)
        assert response.status_code == 422 and response.mimetype == PROBLEM, (field, response.json)
        assert field in [e["field"] for e in response.json["errors"]], (field, response.json["errors"])
    assert count(app, Workout, Workout.user_id == bob.user_id) == 0
    assert count(app, HealthSample, HealthSample.user_id == bob.user_id) == 0


def csv_rows(api: Api, query: str = "") -> list[dict[str, str]]:
    response = export(api, "csv" + query)
    assert response.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def test_csv_has_one_row_per_record_with_utc_times(alice_data: Api) -> None:
    rows = csv_rows(alice_data)
    assert tuple(rows[0].keys()) == COLUMNS
    kinds = Counter(r["record"] for r in rows)
    assert kinds == {
        "segment": 3 + 6,
        "pulse": 3 + 6,
        "heart_rate": 4,
        "respiratory_rate": 1,
        "resting_heart_rate": 1,
        "hrv_sdnn": 1,
        "vo2_max": 1,
        "walking_heart_rate_average": 1,
        "health_workout": 1,
    }
    segments = [r for r in rows if r["record"] == "segment"]
    pulses = [r for r in rows if r["record"] == "pulse"]
    late = next(r for r in segments if r["workout_id"] == str(A) and r["stage"] == "2")
    # 07:52:54 on the workout's clock (UTC-8) is 15:52:54 UTC; the offset has its own column.
    assert late["segment_started_at"] == "2026-11-21T15:52:54.000000Z" and late["rr_bpm"] == "38.5"
    assert late["workout_utc_offset_min"] == "-480"
    assert (late["activity"], late["breath_class"], late["prob_heavy"]) == ("running", "heavy", "0.9")
    bare = next(r for r in segments if r["workout_id"] == str(B) and r["start_s"] == "6.0")
    assert bare["breath_class"] == bare["noise_prob"] == bare["respiration_count"] == ""
    after_3 = next(r for r in pulses if r["workout_id"] == str(B) and r["pulse_point"] == "after_3")
    assert (after_3["stage"], after_3["stage_started_at"], after_3["pulse_bpm"]) == (
        "3",
        "2026-11-28T17:21:10.000000Z",
        "158.0",
    )
    assert after_3["pulse_measured_at"] == "" and after_3["rr_bpm"] == ""
    rr = next(r for r in rows if r["record"] == "respiratory_rate")
    assert (rr["started_at"], rr["ended_at"], rr["value"], rr["unit"]) == (
        "2026-11-29T02:10:00.000000Z",
        "2026-11-29T02:12:30.000000Z",
        "13.0",
        "breaths/min",
    )
    vo2 = next(r for r in rows if r["record"] == "vo2_max")
    assert (vo2["value"], vo2["unit"], vo2["local_date"], vo2["source"]) == (
        "45.2",
        "mL/(kg·min)",
        "2026-11-28",
        "Health Auto Export",
    )
    watch = next(r for r in rows if r["record"] == "health_workout")
    assert (watch["activity_type"], watch["indoor"], watch["workout_id"]) == ("HIIT", "true", str(B))
    attached = [r for r in rows if r["record"] == "heart_rate" and r["workout_id"] == str(B)]
    assert len(attached) == 3 and all(r["value_min"] and r["value_max"] for r in attached)


def test_csv_times_parse_as_utc_datetimes_with_pandas(alice_data: Api) -> None:
    """The issue's complaint: mixed offsets made read_csv leave text, and to_datetime raise."""
    text = export(alice_data, "csv").get_data(as_text=True)
    time_columns = [c for c in COLUMNS if c.endswith("_at")]
    frame = pandas.read_csv(io.StringIO(text), parse_dates=time_columns)
    for column in time_columns:
        assert str(frame[column].dtype).startswith("datetime64") and str(frame[column].dt.tz) == "UTC", column
    segments = frame[frame["record"] == "segment"]
    assert segments["segment_started_at"].min() == pandas.Timestamp("2026-11-21T15:30:00Z")
    rr = frame[frame["record"] == "respiratory_rate"].iloc[0]
    assert rr["ended_at"] - rr["started_at"] == pandas.Timedelta(minutes=2, seconds=30)


def observations(bundle: dict[str, Any], code: str) -> list[dict[str, Any]]:
    """The Observations whose code has `code` (LOINC or other) among its codings."""
    return [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
        and code in {c["code"] for c in e["resource"]["code"]["coding"]}
    ]


def components(observation: dict[str, Any]) -> dict[str, Any]:
    return {c["code"]["coding"][0]["code"]: c for c in observation.get("component", [])}


def validate_fhir(bundle: dict[str, Any]) -> None:
    R4Bundle(copy.deepcopy(bundle), strict=True)  # FHIR R4 (4.0.1) resource definitions
    R4BBundle.model_validate(bundle)  # and R4B's, with primitive formats checked
    assert bundle_problems(bundle) == {}  # and the vital-signs profile rules the export relies on


def test_fhir_bundle_is_valid_r4_with_vital_signs(alice_data: Api) -> None:
    response = export(alice_data, "fhir")
    assert response.mimetype == "application/fhir+json"
    bundle = response.json
    validate_fhir(bundle)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    patient = bundle["entry"][0]
    assert patient["resource"]["resourceType"] == "Patient"
    # 9 segments and the imported RR sample; 9 pulse readings, 4 samples, resting and walking heart rate.
    rr, hr = observations(bundle, "9279-1"), observations(bundle, "8867-4")
    assert len(rr) == 9 + 1 and len(hr) == 9 + 4 + 2
    hrv, vo2 = observations(bundle, "80404-7"), observations(bundle, "HKQuantityTypeIdentifierVO2Max")
    workouts = observations(bundle, "73985-4")
    assert len(hrv) == len(vo2) == len(workouts) == 1
    assert len(bundle["entry"]) == 1 + 10 + 15 + 3
    every = [e["resource"] for e in bundle["entry"][1:]]
    assert all("effectiveDateTime" in o or "effectivePeriod" in o for o in every)  # vital signs or not
    for obs in rr + hr + hrv:
        assert obs["status"] == "final" and obs["subject"]["reference"] == patient["fullUrl"]
        assert obs["category"][0]["coding"][0]["code"] == "vital-signs"
        assert (
            obs["category"][0]["coding"][0]["system"]
            == "http://terminology.hl7.org/CodeSystem/observation-category"
        )
        assert obs["code"]["coding"][0]["system"] == "http://loinc.org"
        assert obs["valueQuantity"]["system"] == "http://unitsofmeasure.org"
    for obs in rr:
        assert obs["meta"]["profile"] == ["http://hl7.org/fhir/StructureDefinition/resprate"]
    for obs in hr:
        assert obs["meta"]["profile"] == ["http://hl7.org/fhir/StructureDefinition/heartrate"]
        assert obs["valueQuantity"]["code"] == "/min"
    assert hrv[0]["meta"]["profile"] == ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]
    assert hrv[0]["valueQuantity"] == {
        "value": 41.5,
        "unit": "ms",
        "system": "http://unitsofmeasure.org",
        "code": "ms",
    }
    resting = observations(bundle, "40443-4")
    assert len(resting) == 1 and resting[0]["valueQuantity"]["value"] == 55
    assert "meta" not in vo2[0] and vo2[0]["category"][0]["coding"][0]["code"] == "activity"
    assert vo2[0]["valueQuantity"]["code"] == "mL/kg/min" and vo2[0]["valueQuantity"]["value"] == 45.2
    watch = workouts[0]
    assert watch["valueCodeableConcept"] == {"text": "HIIT"}
    assert components(watch)["55411-3"]["valueQuantity"]["value"] == 19.0  # minutes
    assert watch["effectivePeriod"] == {
        "start": "2026-11-28T17:02:00+00:00",
        "end": "2026-11-28T17:21:00+00:00",
    }

    first = next(o for o in rr if o["identifier"][0]["value"] == f"{A}/stage-1/0.0")
    assert first["effectivePeriod"] == {
        "start": "2026-11-21T07:30:00-08:00",
        "end": "2026-11-21T07:30:06-08:00",
    }
    assert first["valueQuantity"]["value"] == 14.2
    parts = components(first)
    assert parts["breath-class"]["valueCodeableConcept"]["coding"][0]["code"] == "normal"
    assert parts["noise-probability"]["valueQuantity"] == {
        "value": 0.1,
        "unit": "probability",
        "system": "http://unitsofmeasure.org",
        "code": "1",
    }
    assert parts["protocol-stage"]["valueInteger"] == 1
    bare = next(o for o in rr if o["identifier"][0]["value"] == f"{B}/stage-1/6.0")
    assert set(components(bare)) == {"protocol-stage"}
    # A pulse reading sent without a time gets its protocol point's: after_3 is the end of stage 3
    # (18:21:10 + 45 s), and a note says so.
    no_time = next(o for o in hr if o["identifier"][0]["value"] == f"{B}/pulse/after_3")
    assert (
        no_time["effectiveDateTime"] == "2026-11-28T18:21:55+01:00"
        and no_time["valueQuantity"]["value"] == 158
    )
    assert "after_3, the end of stage 3" in no_time["note"][0]["text"]
    timed = next(o for o in hr if o["identifier"][0]["value"] == f"{A}/pulse/before_1")
    assert timed["effectiveDateTime"] == "2026-11-21T07:29:30-08:00" and "note" not in timed
    sample = next(o for o in rr if o["identifier"][0]["value"].startswith("sample/"))
    assert sample["effectivePeriod"] == {
        "start": "2026-11-29T02:10:00+00:00",
        "end": "2026-11-29T02:12:30+00:00",
    }
    assert len({e["fullUrl"] for e in bundle["entry"]}) == len(bundle["entry"])


@pytest.mark.parametrize(
    ("code", "spoil", "says"),
    [
        (
            "8867-4",
            lambda o: o.pop("effectiveDateTime", None) or o.pop("effectivePeriod"),
            "no effective time",
        ),
        ("9279-1", lambda o: o.pop("meta"), "names no vital-signs profile"),
        ("8867-4", lambda o: o["code"]["coding"].pop(0), "needs code LOINC 8867-4"),
        ("9279-1", lambda o: o["valueQuantity"].update(code="/s"), "needs valueQuantity in /min"),
        ("80404-7", lambda o: o["valueQuantity"].pop("system"), "valueQuantity lacks system"),
        ("8867-4", lambda o: o.update(effectiveDateTime="2026-11"), "at least day precision"),
        ("9279-1", lambda o: o["component"][0].pop("valueInteger"), "no value and no dataAbsentReason"),
        ("HKQuantityTypeIdentifierVO2Max", lambda o: o.update(meta={"profile": [HEARTRATE]}), "outside"),
    ],
)
def test_the_vital_signs_checks_catch_what_the_profile_forbids(
    alice_data: Api, code: str, spoil: Any, says: str
) -> None:
    bundle = export(alice_data, "fhir").json
    spoiled = observations(bundle, code)[0]
    spoil(spoiled)
    problems = bundle_problems(bundle)
    assert any(says in p for p in problems[spoiled["identifier"][0]["value"]]), problems


@pytest.mark.parametrize(
    "spoil",
    [
        lambda o: o["valueQuantity"].update(value="fast"),  # a decimal is a number
        lambda o: o.update(effectivePeriod={"start": "2026-11-21 07:30:00"}),  # FHIR dateTime format
        lambda o: o.update(heartRate=70),  # no such element
        lambda o: o.pop("status"),  # required
    ],
)
def test_the_fhir_validators_do_catch_invalid_resources(alice_data: Api, spoil: Any) -> None:
    bundle = export(alice_data, "fhir").json
    spoil(observations(bundle, "9279-1")[0])
    with pytest.raises((FHIRValidationError, ValidationError)):
        validate_fhir(bundle)


def omh_schema(point: dict[str, Any]) -> str:
    return point["header"]["schema_id"]["name"]


def test_omh_data_points_follow_the_official_schemas_and_the_protocol_stages(alice_data: Api) -> None:
    points = export(alice_data, "omh").json
    assert {p["header"]["id"]: data_point_errors(p) for p in points if data_point_errors(p)} == {}
    assert Counter(omh_schema(p) for p in points) == {
        "respiratory-rate": 9 + 1,  # segments, the imported sample
        "heart-rate": 9 + 4 + 2,  # pulse readings, imported samples, resting and walking heart rate
        "rr-interval": 1,  # HRV SDNN
        "physical-activity": 1,  # the watch's workout (VO2 max has no OMH schema)
    }
    segments = [
        p
        for p in points
        if omh_schema(p) == "respiratory-rate"
        and p["header"]["acquisition_provenance"]["source_name"].startswith("Respira")
    ]
    by_start = {
        p["body"]["effective_time_frame"]["time_interval"]["start_date_time"]: p["body"] for p in segments
    }
    relation = {start: body["temporal_relationship_to_physical_activity"] for start, body in by_start.items()}
    assert relation["2026-11-28T18:00:00+01:00"] == "before exercise"  # stage 1
    assert relation["2026-11-28T18:20:54+01:00"] == "during exercise"  # stage 2
    assert relation["2026-11-28T18:21:10+01:00"] == "after exercise"  # stage 3
    assert relation["2026-11-28T18:26:30.500000+01:00"] == "after exercise"  # stage 4
    assert by_start["2026-11-28T18:20:54+01:00"]["respiratory_rate"] == {"value": 41.0, "unit": "breaths/min"}
    heart = [p["body"] for p in points if omh_schema(p) == "heart-rate"]
    resting = [b for b in heart if b.get("temporal_relationship_to_physical_activity") == "at rest"]
    assert [b["heart_rate"] for b in resting] == [{"value": 55.0, "unit": "beats/min"}]
    after_3 = next(b for b in heart if b["heart_rate"]["value"] == 158)  # sent without a time
    assert after_3["effective_time_frame"] == {"date_time": "2026-11-28T18:21:55+01:00"}
    hrv = next(p["body"] for p in points if omh_schema(p) == "rr-interval")
    assert (
        hrv["rr_interval"] == {"value": 41.5, "unit": "ms"}
        and hrv["descriptive_statistic"] == "standard deviation"
    )
    activity = next(p["body"] for p in points if omh_schema(p) == "physical-activity")
    assert activity["activity_name"] == "HIIT"
    assert len({p["header"]["id"] for p in points}) == len(points)
    assert export(alice_data, "omh").json == points  # stable ids and times: repeated exports agree


@pytest.mark.parametrize(
    ("schema", "spoil"),
    [
        ("respiratory-rate", lambda b: b["respiratory_rate"].update(unit="bpm")),
        ("heart-rate", lambda b: b.pop("effective_time_frame")),
        ("heart-rate", lambda b: b.update(temporal_relationship_to_physical_activity="resting")),
        ("rr-interval", lambda b: b.update(descriptive_statistic="sdnn")),
        ("physical-activity", lambda b: b.pop("activity_name")),
    ],
)
def test_the_omh_schemas_do_catch_invalid_points(alice_data: Api, schema: str, spoil: Any) -> None:
    point = next(p for p in export(alice_data, "omh").json if omh_schema(p) == schema)
    spoil(point["body"])
    assert data_point_errors(point)


def test_every_format_of_an_empty_account_is_valid(bob: Api) -> None:
    document = export(bob, "json").json
    assert document["workouts"] == document["health_samples"] == document["health_workouts"] == []
    assert document["fitness_markers"] == []
    assert export(bob, "omh").json == []
    bundle = export(bob, "fhir").json
    validate_fhir(bundle)
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["Patient"]
    assert export(bob, "csv").get_data(as_text=True).strip() == ",".join(COLUMNS)


def test_exports_hold_only_the_callers_data_and_refuse_unknown_formats(
    alice_data: Api, bob: Api, app: Flask
) -> None:
    for fmt in ("json", "csv", "fhir", "omh"):
        assert str(A) not in export(bob, fmt).get_data(as_text=True)
    response = bob.get("/api/v1/export?format=xml")
    assert response.status_code == 422 and response.mimetype == PROBLEM
    assert response.json["errors"][0]["field"] == "format" and response.json["errors"][0]["in"] == "query"
    assert export(alice_data, "json").mimetype == "application/json"  # format=json is the default too
    assert alice_data.get("/api/v1/export").json["format"] == "respira-export"
    with db_of(app).session() as session:
        assert session.scalars(select(Workout.uuid).where(Workout.user_id == bob.user_id)).all() == []


def test_cli_restores_a_json_export(alice_data: Api, app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "respira-export.json"
    path.write_bytes(export(alice_data, "json").get_data())
    runner = app.test_cli_runner()
    runner.invoke(args=["users", "create", "hana"])
    result = runner.invoke(args=["import", "json", "hana", str(path)])
    assert result.exit_code == 0, result.output
    assert "2 workouts created, 0 replaced, 4 heart-rate samples (4 new)" in result.output
    with db_of(app).session() as session:
        hana = session.scalars(select(User.id).where(User.name == "hana")).one()
    assert count(app, Workout, Workout.user_id == hana) == 2
    path.write_text(path.read_text().replace('"version": 1', '"version": 2'))
    failed = runner.invoke(args=["import", "json", "hana", str(path)])
    assert failed.exit_code == 1 and "version" in failed.output


# ---- issue 16: an account holding only imported data, in every format; incremental exports ------------


def test_an_account_with_only_imported_data_has_it_in_every_format(bob: Api) -> None:
    """Imported heart rate, RR, markers and workouts used to reach only the JSON export."""
    assert upload(bob, full_shape_export()).status_code == 201
    document = export(bob, "json").json
    assert (len(document["health_samples"]), len(document["fitness_markers"])) == (3, 5)
    assert len(document["health_workouts"]) == 1 and document["workouts"] == []

    kinds = Counter(row["record"] for row in csv_rows(bob))
    assert kinds == {
        "heart_rate": 2,
        "respiratory_rate": 1,
        "resting_heart_rate": 2,
        "hrv_sdnn": 1,
        "vo2_max": 1,
        "walking_heart_rate_average": 1,
        "health_workout": 1,
    }

    bundle = export(bob, "fhir").json
    validate_fhir(bundle)
    assert len(bundle["entry"]) == 1 + 3 + 5 + 1
    assert len(observations(bundle, "8867-4")) == 2 + 2 + 1  # samples, resting, walking
    watch = observations(bundle, "73985-4")[0]
    assert watch["valueCodeableConcept"] == {"text": "Running"}
    assert components(watch)["heart-rate-average"]["valueQuantity"]["value"] == 141
    assert components(watch)["indoor"]["valueBoolean"] is False

    points = export(bob, "omh").json
    assert [data_point_errors(p) for p in points if data_point_errors(p)] == []
    assert Counter(omh_schema(p) for p in points) == {
        "heart-rate": 2 + 2 + 1,
        "respiratory-rate": 1,
        "rr-interval": 1,
        "physical-activity": 1,
    }


def test_since_exports_only_what_was_stored_or_changed_after(alice_data: Api, app: Flask) -> None:
    everything = export(alice_data, "json").json
    with db_of(app).session() as session:
        stored = max(
            max(session.scalars(select(column)))
            for column in (
                HealthSample.created_at,
                FitnessMarker.created_at,
                HealthWorkout.created_at,
                Workout.updated_at,
            )
        )
    later = (stored + timedelta(microseconds=1)).isoformat()  # everything so far is before it
    nothing = alice_data.get("/api/v1/export", query_string={"format": "json", "since": later}).json
    assert nothing["since"] == later
    assert nothing["workouts"] == nothing["health_samples"] == nothing["fitness_markers"] == []
    assert csv_rows(alice_data, "&since=" + quote(later)) == []
    assert export(alice_data, "omh&since=" + quote(later)).json == []

    # A workout changed afterwards, and a new sync, are all a sync client gets next time.
    changed = workout_b() | {"device": "Alice's AirPods Pro 2"}
    assert alice_data.put(workout_url(B), json=changed).status_code == 200
    sync = {
        "data": {
            "metrics": [
                {
                    "name": "vo2_max",
                    "units": "ml/(kg·min)",
                    "data": [{"date": "2026-11-27 18:00:00 +0100", "qty": 45.9}],
                }
            ]
        }
    }
    assert alice_data.post("/api/v1/imports/health-auto-export", json=sync).status_code == 201
    delta = alice_data.get("/api/v1/export", query_string={"format": "json", "since": later}).json
    assert [w["id"] for w in delta["workouts"]] == [str(B)]
    assert [(m["kind"], m["value"]) for m in delta["fitness_markers"]] == [("vo2_max", 45.9)]
    assert delta["health_samples"] == [] and len(everything["fitness_markers"]) == 4
    bundle = export(alice_data, "fhir&since=" + quote(later)).json
    validate_fhir(bundle)
    # The Patient, the 6 segments and 2 pulse readings of workout B as PUT again, and VO2 max.
    assert len(bundle["entry"]) == 1 + 6 + 2 + 1

    for bad in ("2026-11-28T10:00:00", "0.5"):  # no offset; a number (not read as Unix time)
        refused = alice_data.get("/api/v1/export", query_string={"format": "json", "since": bad})
        assert refused.status_code == 422 and refused.json["errors"][0]["field"] == "since"
