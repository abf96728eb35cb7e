"""Hostile input, as issue 15's attacker sent it: impossible and implausible times and values at every
entry point, zip bombs and gigantic XML nodes, and pushes too large to parse whole. Limits are set small
so each case is a few kB; bench/hostile_imports.py runs the full-size ones and measures memory."""

from __future__ import annotations

import copy
import io
import json
import socket
import subprocess
import sys
import tempfile
import tracemalloc
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from api_helpers import Api, app_config, make_user, sample_workout, workout_url
from flask import Flask
from interop_helpers import count, db_of, export_xml, export_zip, heart_rate, record, upload

from backend import create_app
from backend.imports.apple_health import ExportLimits, open_export, parse_export
from backend.imports.jobs import ImportSettings, create_job, this_worker, wait_for_job
from backend.models import FitnessMarker, HealthSample, HealthWorkout, ImportJob, Workout

PROBLEM = "application/problem+json"
HAE = "/api/v1/imports/health-auto-export"
RESTORE = "/api/v1/imports/json"
# The attacker's times: overflow when converted to UTC, and merely implausible ones.
OVERFLOWING = ("0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00")
IMPLAUSIBLE = ("1900-01-01T00:00:00+00:00", "2200-01-01T00:00:00+00:00", "1999-12-31T23:59:59+00:00")
HEALTH_STYLE = {
    "0001-01-01T00:00:00+01:00": "0001-01-01 00:00:00 +0100",
    "9999-12-31T23:00:00-05:00": "9999-12-31 23:00:00 -0500",
    "1900-01-01T00:00:00+00:00": "1900-01-01 00:00:00 +0000",
    "2200-01-01T00:00:00+00:00": "2200-01-01 00:00:00 +0000",
    "1999-12-31T23:59:59+00:00": "1999-12-31 23:59:59 +0000",
}


def refused(response: Any, field: str) -> None:
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    assert any(e["field"] == field for e in response.json["errors"]), response.json


# ---- times and values: REST ----------------------------------------------------------------------


@pytest.mark.parametrize("moment", OVERFLOWING + IMPLAUSIBLE)
def test_rest_refuses_impossible_and_implausible_times(alice: Api, moment: str) -> None:
    url = workout_url(uuid.uuid4())
    refused(alice.put(url, json=sample_workout(started_at=moment)), "started_at")
    body = sample_workout()
    body["stages"][0]["started_at"] = moment
    refused(alice.put(url, json=body), "stages[0].started_at")
    body = sample_workout()
    body["pulse"][0]["measured_at"] = moment
    refused(alice.put(url, json=body), "pulse[0].measured_at")
    assert alice.put(url, json=sample_workout()).status_code == 201
    segment = {"start_s": 0, "duration_s": 6, "rr_bpm": 14}
    refused(
        alice.post(f"{url}/stages/3/segments", json={"started_at": moment, "segments": [segment]}),
        "started_at",
    )
    pulse = {"pulse": [{"point": "after_3", "bpm": 140, "measured_at": moment}]}
    refused(alice.post(f"{url}/pulse", json=pulse), "pulse[0].measured_at")
    assert len(alice.get(url).json["pulse"]) == 3  # nothing was added


def test_the_plausible_range_ends_a_day_after_now(alice: Api) -> None:
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    ok = (now + timedelta(hours=20)).isoformat()
    late = (now + timedelta(days=1, hours=1)).isoformat()
    assert alice.put(workout_url(uuid.uuid4()), json=sample_workout(started_at=ok)).status_code == 201
    refused(alice.put(workout_url(uuid.uuid4()), json=sample_workout(started_at=late)), "started_at")
    assert (
        alice.put(
            workout_url(uuid.uuid4()), json=sample_workout(started_at="2000-01-01T00:00:00Z")
        ).status_code
        == 201
    )


@pytest.mark.parametrize(
    ("name", "value"), [("respiration_count", 1e308), ("respiration_count", 5000), ("start_s", 1e308)]
)
def test_segment_values_are_bounded(alice: Api, name: str, value: float) -> None:
    body = sample_workout()
    body["stages"][0]["segments"][0][name] = value
    refused(alice.put(workout_url(uuid.uuid4()), json=body), f"stages[0].segments[0].{name}")


@pytest.mark.parametrize("moment", OVERFLOWING)
def test_filters_with_instants_that_overflow_are_422_not_500(alice: Api, moment: str) -> None:
    for name in ("from", "to"):
        answer = alice.get("/api/v1/workouts", query_string={name: moment})
        assert answer.status_code == 422 and answer.json["errors"][0]["field"] == name


# ---- times and values: JSON restore --------------------------------------------------------------


@pytest.mark.parametrize("moment", OVERFLOWING + IMPLAUSIBLE)
def test_json_restore_refuses_them_and_stores_nothing(alice: Api, app: Flask, moment: str) -> None:
    assert alice.put(workout_url(uuid.uuid4()), json=sample_workout()).status_code == 201
    document = alice.get("/api/v1/export?format=json").json
    alice.delete(workout_url(document["workouts"][0]["id"]))
    bad = copy.deepcopy(document)
    bad["workouts"][0]["started_at"] = moment
    refused(alice.post(RESTORE, json=bad), "workouts[0].started_at")
    sample = {"kind": "heart_rate", "started_at": moment, "ended_at": moment, "bpm": 60, "source": "x"}
    bad = copy.deepcopy(document) | {"health_samples": [sample]}
    refused(alice.post(RESTORE, json=bad), "health_samples[0].started_at")
    marker = {"kind": "vo2_max", "started_at": moment, "ended_at": moment, "local_date": "2026-11-21"}
    bad = copy.deepcopy(document) | {"fitness_markers": [marker | {"value": 44.0, "source": "x"}]}
    refused(alice.post(RESTORE, json=bad), "fitness_markers[0].started_at")
    assert count(app, Workout) == 0 and count(app, HealthSample) == 0 and count(app, FitnessMarker) == 0


# ---- times and values: Health Auto Export --------------------------------------------------------


def hae_push(
    date: str = "2024-09-28 16:40:00 +1000", value: Any = 64, workout_start: str | None = None
) -> dict:
    workouts = []
    if workout_start is not None:
        workouts.append({"name": "Run", "start": workout_start, "end": "2024-09-28 17:30:00 +1000"})
    return {
        "data": {
            "metrics": [{"name": "heart_rate", "units": "bpm", "data": [{"date": date, "Avg": value}]}],
            "workouts": workouts,
        }
    }


@pytest.mark.parametrize("moment", OVERFLOWING + IMPLAUSIBLE)
def test_health_auto_export_skips_them_with_a_warning(alice: Api, app: Flask, moment: str) -> None:
    answer = alice.post(HAE, json=hae_push(HEALTH_STYLE[moment], workout_start=HEALTH_STYLE[moment]))
    assert answer.status_code == 201, answer.json
    assert answer.json["counts"]["skipped"] == 2 and answer.json["counts"]["heart_rate_added"] == 0
    assert "plausible range" in answer.json["warnings"][0]
    assert count(app, HealthSample) == 0 and count(app, HealthWorkout) == 0


@pytest.mark.parametrize("moment", OVERFLOWING + IMPLAUSIBLE)
def test_health_auto_export_skips_fitness_markers_at_such_times(alice: Api, app: Flask, moment: str) -> None:
    """Markers are measurements: the same time range; a point's own `end` is checked too."""
    good = {"date": "2024-09-28 00:00:00 +1000", "qty": 52}
    points = [good, {"date": HEALTH_STYLE[moment], "qty": 53}, good | {"end": HEALTH_STYLE[moment]}]
    push = {"data": {"metrics": [{"name": "resting_heart_rate", "units": "bpm", "data": points}]}}
    answer = alice.post(HAE, json=push)
    assert answer.status_code == 201, answer.json
    assert answer.json["counts"]["skipped"] == 2 and answer.json["counts"]["resting_heart_rate_added"] == 1
    assert answer.json["skipped"] == [
        {"type": "resting_heart_rate", "reason": "time outside the plausible range", "count": 2}
    ]
    assert all("plausible range" in w for w in answer.json["warnings"])
    assert count(app, FitnessMarker) == 1


@pytest.mark.parametrize("value", ["61", True, "NaN"])
def test_health_auto_export_marker_values_must_be_json_numbers(alice: Api, app: Flask, value: Any) -> None:
    point = {"date": "2024-09-28 00:00:00 +1000", "qty": value}
    push = {"data": {"metrics": [{"name": "vo2_max", "units": "ml/(kg·min)", "data": [point]}]}}
    refused(alice.post(HAE, json=push), "data.metrics[0].data[0].qty")
    assert count(app, FitnessMarker) == 0


@pytest.mark.parametrize("value", ["61", True, "NaN"])
def test_health_auto_export_values_must_be_json_numbers(alice: Api, app: Flask, value: Any) -> None:
    refused(alice.post(HAE, json=hae_push(value=value)), "data.metrics[0].data[0].Avg")
    assert count(app, HealthSample) == 0
    assert alice.post(HAE, json=hae_push(value=61)).status_code == 201  # an integer is a number


# ---- times and values: Apple Health --------------------------------------------------------------


@pytest.mark.parametrize("moment", OVERFLOWING + IMPLAUSIBLE)
def test_apple_health_skips_them_with_a_warning(alice: Api, app: Flask, moment: str) -> None:
    good = heart_rate("2026-11-21 07:30:00 -0800", 70)
    answer = upload(alice, export_xml([good, heart_rate(HEALTH_STYLE[moment], 70)]))
    assert answer.status_code == 201, answer.json
    assert answer.json["counts"]["skipped"] == 1 and answer.json["counts"]["heart_rate_added"] == 1
    assert "plausible range" in answer.json["warnings"][0]


@pytest.mark.parametrize("moment", OVERFLOWING + IMPLAUSIBLE)
def test_apple_health_skips_fitness_markers_at_such_times(alice: Api, app: Flask, moment: str) -> None:
    good = record("RestingHeartRate", "2026-11-21 00:00:00 -0800", "54", metadata=False)
    bad = record("VO2Max", HEALTH_STYLE[moment], "44.7", unit="mL/min·kg")
    answer = upload(alice, export_xml([good, bad]))
    assert answer.status_code == 201, answer.json
    assert answer.json["counts"]["skipped"] == 1 and answer.json["counts"]["resting_heart_rate_added"] == 1
    assert answer.json["skipped"] == [
        {"type": "HKQuantityTypeIdentifierVO2Max", "reason": "time outside the plausible range", "count": 1}
    ]
    assert "plausible range" in answer.json["warnings"][0] and count(app, FitnessMarker) == 1


# ---- zip bombs and gigantic nodes ----------------------------------------------------------------


def configured(database_url: str, **config: Any) -> tuple[Flask, Api]:
    config.setdefault("IMPORT_UPLOAD_DIR", tempfile.mkdtemp(prefix="respira-uploads-"))  # its own
    app = create_app(app_config(database_url, **config))
    user_id, token = make_user(app, "mallory")
    return app, Api(app, token, user_id)


def records(n: int) -> bytes:
    return export_xml(heart_rate(f"2026-11-21 07:{i // 60:02d}:{i % 60:02d} -0800", 70) for i in range(n))


def too_large(response: Any, words: str) -> None:
    assert response.status_code == 413, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM and response.json["type"].endswith("#problem-upload-too-large")
    assert words in response.json["detail"], response.json["detail"]
    assert response.json["errors"][0]["field"] == "file"


def test_zip_bombs_are_refused_before_inflating(app: Flask, database_url: str) -> None:
    bomb_app, mallory = configured(database_url, IMPORT_MAX_ZIP_RATIO=50, IMPORT_MAX_XML_BYTES=200_000)
    bomb = export_xml([heart_rate("2026-11-21 07:30:00 -0800", 70) + " " * 150_000])  # ratio > 100
    too_large(upload(mallory, export_zip(bomb), "export.zip"), "times its compressed size")
    too_large(upload(mallory, export_zip(records(1000)), "export.zip"), "would inflate to")  # 250 kB > 200 kB
    too_large(upload(mallory, records(1000)), "at most 200,000 are accepted")  # the bare XML too
    assert upload(mallory, export_zip(records(100)), "export.zip").status_code == 201  # a real one passes
    assert count(bomb_app, HealthSample) == 100
    db_of(bomb_app).dispose()


def test_a_zip_whose_header_lies_about_its_size_stops_at_the_declared_size(
    app: Flask, database_url: str
) -> None:
    xml = records(50)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("apple_health_export/export.xml", xml)
    data = bytearray(buffer.getvalue())
    # Patch the declared (uncompressed) size in both headers down to 1,000 bytes.
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    data[local + 22 : local + 26] = (1000).to_bytes(4, "little")
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    answer = upload(alice_of(app, database_url), bytes(data), "export.zip")
    assert answer.status_code in (400, 422) and answer.mimetype == PROBLEM, answer.json
    assert count(app, HealthSample) <= 50


def alice_of(app: Flask, database_url: str) -> Api:
    user_id, token = make_user(app, f"user-{uuid.uuid4().hex[:6]}")
    return Api(app, token, user_id)


@pytest.mark.parametrize(
    ("filler", "words"),
    [
        (b'<Note value="' + b"x" * 50_000 + b'"/>', "single tag or comment runs past"),  # one huge attribute
        (b"<!--" + b"x" * 50_000 + b"-->", "single tag or comment runs past"),  # one huge comment
    ],
)
def test_gigantic_nodes_are_refused_with_bounded_memory(
    app: Flask, database_url: str, filler: bytes, words: str
) -> None:
    node_app, mallory = configured(database_url, IMPORT_MAX_XML_NODE_BYTES=10_000)
    xml = records(3).replace(b"</HealthData>", filler + b"</HealthData>")
    answer = upload(mallory, export_zip(xml), "export.zip")
    too_large(answer, words)
    job = mallory.get("/api/v1/imports").json["imports"][0]
    assert job["status"] == "failed" and words in job["error"]
    assert job["counts"]["heart_rate_added"] == 3  # what came before is kept, as for malformed XML
    db_of(node_app).dispose()


def test_a_gigantic_text_node_is_dropped_as_it_streams(tmp_path: Path) -> None:
    """Exports carry no text; the parser keeps none, so 8 MB of it cost no memory (was: all of it)."""
    path = tmp_path / "export.xml"
    path.write_bytes(
        records(3).replace(b"</HealthData>", b"<Note>" + b"x" * 8_000_000 + b"</Note></HealthData>")
    )
    tracemalloc.start()
    with open_export(path, ExportLimits(max_node_bytes=10_000)) as export:
        items = list(parse_export(export.stream, limits=ExportLimits(max_node_bytes=10_000)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [type(item).__name__ for item in items] == ["SampleIn"] * 3 + ["Skipped"], items  # <Note>
    assert items[-1].record_type == "Note" and peak < 1_000_000, peak


def test_entity_declarations_are_refused(alice: Api) -> None:
    xml = b'<?xml version="1.0"?><!DOCTYPE HealthData [<!ENTITY a "aaaaaaaaaa">]><HealthData>&a;</HealthData>'
    answer = upload(alice, xml)
    assert answer.status_code == 422 and answer.mimetype == PROBLEM
    assert "declares entities" in answer.json["detail"]


def test_imports_above_the_inline_size_go_to_the_job_path_by_inflated_size(
    app: Flask, database_url: str
) -> None:
    """A small zip that inflates past IMPORT_INLINE_MAX_BYTES is a job, not work inside the request."""
    job_app, mallory = configured(database_url, IMPORT_INLINE_MAX_BYTES=20_000)
    data = export_zip(records(300))  # ~75 kB of XML in ~5 kB of zip
    assert len(data) < 20_000
    answer = upload(mallory, data, "export.zip")
    assert answer.status_code == 202
    assert wait_for_job(job_app, uuid.UUID(answer.json["id"]), timeout_s=60)
    assert mallory.get(answer.json["url"]).json["status"] == "succeeded"
    db_of(job_app).dispose()


# ---- large Health Auto Export pushes: streamed, in a job -----------------------------------------


def big_push(points: int = 200, bad_at: int | None = None) -> dict:
    data = [
        {
            "date": f"2024-09-28 1{i // 60 % 10}:{i % 60:02d}:00 +1000",
            "Avg": 60 + i % 50,
            "source": f"w{i // 600}",
        }
        for i in range(points)
    ]
    if bad_at is not None:
        data[bad_at]["Avg"] = "61"
    return {
        "data": {
            "workouts": [
                {
                    "name": "Run",
                    "start": "2024-09-28 5:00:00 pm +1000",
                    "end": "2024-09-28 5:30:00 pm +1000",
                    "route": [{"lat": 1.0, "lon": 2.0}] * 50,  # extra fields are allowed
                    "heartRateData": [{"date": "2024-09-28 5:10:00 pm +1000", "Avg": 150}],
                }
            ],
            # The metric's name after its data: JSON objects are unordered.
            "metrics": [
                {"data": data, "units": "bpm", "name": "heart_rate"},
                {"name": "respiratory_rate", "data": [{"date": "2024-09-28 02:00:00 +1000", "qty": 14.5}]},
                {"name": "step_count", "data": [{"date": "whenever", "qty": "many"}]},
                {
                    "name": "vo2_max",
                    "units": "ml/(kg·min)",
                    "data": [
                        {"date": "2024-09-28 18:00:00 +1000", "end": "2024-09-28 18:10:00 +1000", "qty": 45},
                        {"date": "1999-12-31 23:00:00 +0000", "qty": 44.0},  # skipped: implausible time
                        {"date": "2024-09-29 18:00:00 +1000", "qty": 400},  # skipped: out of range
                    ],
                },
            ],
            "symptoms": [{"name": "Coughing"}, {"name": "Fatigue"}],  # not imported: counted
            "ecg": {"not": "an array"},  # neither imported nor counted (as inline)
        }
    }


def post_json(api: Api, document: Any) -> Any:
    return api.post(HAE, data=json.dumps(document), content_type="application/json")


def test_a_large_push_is_streamed_in_a_job_with_the_same_result(app: Flask, database_url: str) -> None:
    inline = post_json(alice_of(app, database_url), big_push())
    assert inline.status_code == 201
    job_app, mallory = configured(database_url, IMPORT_PUSH_INLINE_MAX_BYTES=2_000, IMPORT_BATCH_SIZE=7)
    answer = post_json(mallory, big_push())
    assert answer.status_code == 202 and answer.headers["Location"] == answer.json["url"]
    assert wait_for_job(job_app, uuid.UUID(answer.json["id"]), timeout_s=60)
    done = mallory.get(answer.json["url"]).json
    assert done["status"] == "succeeded", done
    assert done["counts"] == inline.json["counts"]
    # The import report too: every type skipped, and why, as the inline push reports it.
    assert done["skipped"] == inline.json["skipped"] and done["warnings"] == inline.json["warnings"]
    assert {(row["type"], row["reason"]): row["count"] for row in done["skipped"]} == {
        ("step_count", "not a record type Respira imports"): 1,
        ("symptoms", "not a record type Respira imports"): 2,
        ("workout route", "not a record type Respira imports"): 50,
        ("vo2_max", "time outside the plausible range"): 1,
        ("vo2_max", "value outside the plausible range"): 1,
    }
    assert done["counts"]["vo2_max_added"] == 1 and done["counts"]["skipped"] == 55
    assert count(job_app, HealthSample, HealthSample.user_id == mallory.user_id) == 202
    assert count(job_app, FitnessMarker, FitnessMarker.user_id == mallory.user_id) == 1
    again = post_json(mallory, big_push())  # a re-sent sync adds nothing
    assert wait_for_job(job_app, uuid.UUID(again.json["id"]), timeout_s=60)
    assert mallory.get(again.json["url"]).json["counts"]["heart_rate_added"] == 0
    assert not list(ImportSettings.from_app(job_app).upload_dir.glob("*.upload"))
    db_of(job_app).dispose()


def test_a_large_push_with_a_bad_point_fails_naming_it_and_stores_nothing(
    app: Flask, database_url: str
) -> None:
    job_app, mallory = configured(database_url, IMPORT_PUSH_INLINE_MAX_BYTES=2_000, IMPORT_BATCH_SIZE=7)
    answer = post_json(mallory, big_push(bad_at=150))
    assert answer.status_code == 202
    assert wait_for_job(job_app, uuid.UUID(answer.json["id"]), timeout_s=60)
    done = mallory.get(answer.json["url"]).json
    assert done["status"] == "failed" and "data.metrics[0].data[150].Avg" in done["error"], done
    assert count(job_app, HealthSample) == 0 and count(job_app, HealthWorkout) == 0
    db_of(job_app).dispose()


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b'{"data": {"metrics": [' + b'{"name": "heart_rate", "data": []},' * 100 + b"", 400, "(body)"),
        (json.dumps({"data": {"metrics": "nope", "pad": "x" * 3000}}).encode(), 422, "data.metrics"),
        (
            json.dumps({"data": {"metrics": [{"name": 5, "data": []}], "pad": "x" * 3000}}).encode(),
            422,
            "data.metrics[0].name",
        ),
        (b'{"data": {"metrics": []}, "pad": "' + b"x" * 3000 + b'", "data": {}}', 422, "data"),  # twice
        (json.dumps({"pad": "x" * 3000}).encode(), 422, "data"),
        (
            json.dumps(
                {"data": {"metrics": [{"name": "heart_rate", "data": [1]}], "pad": "x" * 3000}}
            ).encode(),
            422,
            "data.metrics[0].data[0]",
        ),
    ],
)
def test_a_large_push_that_is_not_one_is_refused_at_once(
    app: Flask, database_url: str, body: bytes, status: int, field: str
) -> None:
    job_app, mallory = configured(database_url, IMPORT_PUSH_INLINE_MAX_BYTES=2_000)
    answer = mallory.post(HAE, data=body, content_type="application/json")
    assert answer.status_code == status and answer.mimetype == PROBLEM, answer.get_data(as_text=True)
    assert answer.json["errors"][0]["field"] == field
    assert count(job_app, ImportJob) == 0
    assert not list(ImportSettings.from_app(job_app).upload_dir.glob("*.upload"))
    db_of(job_app).dispose()


# ---- a job whose process died --------------------------------------------------------------------


def test_a_job_whose_process_died_is_reported_failed_at_once(app: Flask, alice: Api) -> None:
    """gunicorn killed the worker (timeout, OOM): the next poll says so, not IMPORT_STALE_AFTER_S later."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    db = db_of(app)
    running = []
    for worker in (f"{socket.gethostname()}:{dead.pid}", this_worker(), f"elsewhere.example:{dead.pid}"):
        job = create_job(db, alice.user_id, "apple_health", "export.zip")
        with db.session(write=True) as session, session.begin():
            stored = session.get(ImportJob, job.id)
            assert stored is not None
            stored.status, stored.worker = "running", worker
        running.append(job)
    answers = [alice.get(f"/api/v1/imports/{job.uuid}").json for job in running]
    assert answers[0]["status"] == "failed" and "process running it stopped" in answers[0]["error"]
    assert answers[1]["status"] == "running"  # alive: this very process
    assert answers[2]["status"] == "running"  # another host: its heartbeat will tell
