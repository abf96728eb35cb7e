"""Exports: JSON (round trip into a new user gives equal data), CSV, FHIR R4 (validated by fhirclient's
R4 models and fhir.resources' R4B models), Open mHealth (validated against the respiratory-rate schema)."""

from __future__ import annotations

import copy
import csv
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from api_helpers import Api, make_user, sample_workout, workout_url
from fhir.resources.R4B.bundle import Bundle as R4BBundle
from fhirclient.models.bundle import Bundle as R4Bundle
from fhirclient.models.fhirabstractbase import FHIRValidationError
from flask import Flask
from interop_helpers import count, db_of
from jsonschema import Draft7Validator
from pydantic import ValidationError
from sqlalchemy import select

from backend.exports.csv_export import COLUMNS
from backend.exports.schemas import RespiraExport
from backend.models import HealthSample, User, Workout

A = uuid.UUID("6a1f2e3d-4c5b-4a69-8877-665544332211")
B = uuid.UUID("0b9c8d7e-6f5a-4b3c-9d2e-1f0a9b8c7d6e")
PROBLEM = "application/problem+json"


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
                {"name": "respiratory_rate", "data": [{"date": "2026-11-29 3:10:00 am +0100", "qty": 13.0}]},
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


def test_csv_has_one_row_per_segment_and_pulse_reading(alice_data: Api) -> None:
    response = export(alice_data, "csv")
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert tuple(rows[0].keys()) == COLUMNS
    segments = [r for r in rows if r["record"] == "segment"]
    pulses = [r for r in rows if r["record"] == "pulse"]
    assert len(segments) == 3 + 6 and len(pulses) == 3 + 6 and len(rows) == 18
    late = next(r for r in segments if r["workout_id"] == str(A) and r["stage"] == "2")
    assert late["segment_started_at"] == "2026-11-21T07:52:54-08:00" and late["rr_bpm"] == "38.5"
    assert (late["activity"], late["breath_class"], late["prob_heavy"]) == ("running", "heavy", "0.9")
    bare = next(r for r in segments if r["workout_id"] == str(B) and r["start_s"] == "6.0")
    assert bare["breath_class"] == bare["noise_prob"] == bare["respiration_count"] == ""
    after_3 = next(r for r in pulses if r["workout_id"] == str(B) and r["pulse_point"] == "after_3")
    assert (after_3["stage"], after_3["stage_started_at"], after_3["pulse_bpm"]) == (
        "3",
        "2026-11-28T18:21:10+01:00",
        "158.0",
    )
    assert after_3["pulse_measured_at"] == "" and after_3["rr_bpm"] == ""


def observations(bundle: dict[str, Any], loinc: str) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
        and e["resource"]["code"]["coding"][0]["code"] == loinc
    ]


def components(observation: dict[str, Any]) -> dict[str, Any]:
    return {c["code"]["coding"][0]["code"]: c for c in observation.get("component", [])}


def validate_fhir(bundle: dict[str, Any]) -> None:
    R4Bundle(copy.deepcopy(bundle), strict=True)  # FHIR R4 (4.0.1) resource definitions
    R4BBundle.model_validate(bundle)  # and R4B's, with primitive formats checked


def test_fhir_bundle_is_valid_r4_with_vital_signs(alice_data: Api) -> None:
    response = export(alice_data, "fhir")
    assert response.mimetype == "application/fhir+json"
    bundle = response.json
    validate_fhir(bundle)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    patient = bundle["entry"][0]
    assert patient["resource"]["resourceType"] == "Patient"
    rr, hr = observations(bundle, "9279-1"), observations(bundle, "8867-4")
    assert len(rr) == 9 and len(hr) == 9 and len(bundle["entry"]) == 1 + 9 + 9
    for obs in rr + hr:
        assert obs["status"] == "final" and obs["subject"]["reference"] == patient["fullUrl"]
        assert obs["category"][0]["coding"][0]["code"] == "vital-signs"
        assert (
            obs["category"][0]["coding"][0]["system"]
            == "http://terminology.hl7.org/CodeSystem/observation-category"
        )
        assert obs["code"]["coding"][0]["system"] == "http://loinc.org"
        assert (
            obs["valueQuantity"]["system"] == "http://unitsofmeasure.org"
            and obs["valueQuantity"]["code"] == "/min"
        )
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
    no_time = next(o for o in hr if o["identifier"][0]["value"] == f"{B}/pulse/after_3")
    assert "effectiveDateTime" not in no_time and no_time["valueQuantity"]["value"] == 158
    timed = next(o for o in hr if o["identifier"][0]["value"] == f"{A}/pulse/before_1")
    assert timed["effectiveDateTime"] == "2026-11-21T07:29:30-08:00"
    assert len({e["fullUrl"] for e in bundle["entry"]}) == len(bundle["entry"])


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


# Open mHealth omh:respiratory-rate:2.0 in a data point (data-point-1.0, header-1.0), written from the
# published schemas (time-frame-1.0, time-interval-1.0, unit-value-1.0,
# temporal-relationship-to-physical-activity-1.0): the parts a respiratory-rate data point uses.
DATE_TIME = {"type": "string", "format": "date-time"}
OMH_RESPIRATORY_RATE = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["header", "body"],
    "properties": {
        "header": {
            "type": "object",
            "required": ["id", "creation_date_time", "schema_id"],
            "properties": {
                "id": {"type": "string"},
                "creation_date_time": DATE_TIME,
                "schema_id": {
                    "type": "object",
                    "required": ["namespace", "name", "version"],
                    "properties": {
                        "namespace": {"const": "omh"},
                        "name": {"const": "respiratory-rate"},
                        "version": {"type": "string", "pattern": r"^\d+\.\d+$"},
                    },
                },
                "acquisition_provenance": {
                    "type": "object",
                    "required": ["source_name"],
                    "properties": {
                        "source_name": {"type": "string"},
                        "modality": {"enum": ["sensed", "self-reported"]},
                    },
                },
            },
        },
        "body": {
            "type": "object",
            "required": ["respiratory_rate", "effective_time_frame"],
            "properties": {
                "respiratory_rate": {
                    "type": "object",
                    "required": ["value", "unit"],
                    "properties": {"value": {"type": "number"}, "unit": {"enum": ["breaths/min"]}},
                },
                "effective_time_frame": {
                    "oneOf": [
                        {"required": ["date_time"], "properties": {"date_time": DATE_TIME}},
                        {
                            "required": ["time_interval"],
                            "properties": {
                                "time_interval": {
                                    "type": "object",
                                    "required": ["start_date_time", "end_date_time"],
                                    "properties": {"start_date_time": DATE_TIME, "end_date_time": DATE_TIME},
                                }
                            },
                        },
                    ]
                },
                "temporal_relationship_to_physical_activity": {
                    "enum": ["at rest", "active", "before exercise", "after exercise", "during exercise"]
                },
            },
        },
    },
}
OMH = Draft7Validator(OMH_RESPIRATORY_RATE, format_checker=Draft7Validator.FORMAT_CHECKER)


def test_omh_data_points_follow_the_schema_and_the_protocol_stages(alice_data: Api) -> None:
    points = export(alice_data, "omh").json
    assert len(points) == 9
    for point in points:
        OMH.validate(point)
    by_start = {
        p["body"]["effective_time_frame"]["time_interval"]["start_date_time"]: p["body"] for p in points
    }
    relation = {start: body["temporal_relationship_to_physical_activity"] for start, body in by_start.items()}
    assert relation["2026-11-28T18:00:00+01:00"] == "before exercise"  # stage 1
    assert relation["2026-11-28T18:20:54+01:00"] == "during exercise"  # stage 2
    assert relation["2026-11-28T18:21:10+01:00"] == "after exercise"  # stage 3
    assert relation["2026-11-28T18:26:30.500000+01:00"] == "after exercise"  # stage 4
    assert by_start["2026-11-28T18:20:54+01:00"]["respiratory_rate"] == {"value": 41.0, "unit": "breaths/min"}
    assert len({p["header"]["id"] for p in points}) == 9
    assert export(alice_data, "omh").json == points  # stable ids and times: repeated exports agree
    spoiled = copy.deepcopy(points[0])
    spoiled["body"]["respiratory_rate"]["unit"] = "bpm"
    assert not OMH.is_valid(spoiled)


def test_every_format_of_an_empty_account_is_valid(bob: Api) -> None:
    document = export(bob, "json").json
    assert (document["workouts"], document["health_samples"], document["health_workouts"]) == ([], [], [])
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
