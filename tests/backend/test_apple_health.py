"""Apple Health export import: records and workouts in, samples attached, pulse points filled, idempotent,
bad uploads answered with problem+json, large files as jobs with progress, bounded memory."""

from __future__ import annotations

import tracemalloc
import uuid
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from api_helpers import Api, app_config, make_user, workout_url
from flask import Flask
from interop_helpers import (
    FULL_SHAPE_COUNTS,
    FULL_SHAPE_SKIPPED,
    PHONE,
    count,
    db_of,
    export_xml,
    export_zip,
    full_shape_export,
    heart_rate,
    hk_workout,
    record,
    respiratory_rate,
    upload,
)
from sqlalchemy import select

from backend import create_app
from backend.imports.jobs import ImportSettings, create_job, run_apple_health_job, wait_for_job
from backend.imports.records import MARKERS
from backend.models import FitnessMarker, HealthSample, HealthWorkout, ImportJob, PulseReading
from tests.support.apple_health_export import ExportSummary, write_export_file

PROBLEM = "application/problem+json"
WORKOUT_ID = uuid.UUID("3f1d2c4b-5a69-4788-9e0f-a1b2c3d4e5f6")


def t(clock: str, day: int = 21) -> str:
    """A time on 2026-11-<day> in Apple's format, on the workout's clock (UTC-8)."""
    return f"2026-11-{day} {clock} -0800"


def segment(start_s: float, rr_bpm: float) -> dict[str, object]:
    return {"start_s": start_s, "duration_s": 6.0, "rr_bpm": rr_bpm, "breath_class": "normal"}


def protocol_workout() -> dict[str, object]:
    """Four stages; only before_1 was read on the watch by hand. Span 07:30:00-07:59:00."""
    return {
        "started_at": "2026-11-21T07:30:00-08:00",
        "activity": "running",
        "environment": "outdoor",
        "model_version": "tclstm-2026.11",
        "stages": [
            {"stage": 1, "started_at": "2026-11-21T07:30:00-08:00", "segments": [segment(0, 14.0)]},
            {"stage": 2, "started_at": "2026-11-21T07:52:00-08:00", "segments": [segment(54, 38.0)]},
            {"stage": 3, "started_at": "2026-11-21T07:53:05-08:00", "segments": [segment(0, 30.0)]},
            {"stage": 4, "started_at": "2026-11-21T07:58:00-08:00", "segments": [segment(0, 20.0)]},
        ],
        "pulse": [{"point": "before_1", "bpm": 68, "measured_at": "2026-11-21T07:29:30-08:00"}],
    }


# Heart rate near the workout (attached: inside 07:28:00-08:01:00, the span widened by 120 s).
NEAR = [
    ("07:29:10", 66),  # before_1 is already stored: left alone
    ("07:51:58", 150),  # before_2, expected 07:52:00: 2 s away
    ("07:52:05", 152),
    ("07:53:01", 158),  # before_3, expected 07:53:05: a tie at 4 s with 07:53:09 goes to the earlier
    ("07:53:09", 161),
    ("07:54:30", 140),  # after_3, expected 07:54:05: 25 s away
    ("07:55:00", 131),
    ("08:00:30", 101),  # after_4, expected 07:59:00: 90 s; before_4 (07:58:00) has nothing within 120 s
]
FAR = [("07:20:00", 62), ("12:00:00", 70)]


def scenario_export() -> bytes:
    return export_xml(
        [
            *(heart_rate(t(clock), bpm) for clock, bpm in NEAR),
            heart_rate(t("07:55:00"), 130, source=PHONE),  # same instant, another source: both kept
            *(heart_rate(t(clock), bpm) for clock, bpm in FAR),
            respiratory_rate(t("02:00:00"), t("02:02:30"), 14.5),
            respiratory_rate(t("02:10:00"), t("02:12:30"), 13.9),
            heart_rate(t("13:00:00"), "abc"),  # skipped: not a number
            heart_rate(t("13:05:00"), 400),  # skipped: not a heart rate
            respiratory_rate(t("03:00:00"), t("03:02:30"), 15, unit="count"),  # skipped: not a rate
            record("StepCount", t("08:10:00"), "120", unit="count", source=PHONE, metadata=False),
            record("ActiveEnergyBurned", t("08:10:00"), "3.2", unit="Cal", metadata=False),
            hk_workout(t("07:35:00"), t("07:52:30")),  # overlaps the workout: linked
            hk_workout(t("09:00:00", 22), t("09:30:00", 22), activity="Cycling", indoor=True),
        ]
    )


NO_MARKERS = {f"{kind}_{step}": 0 for kind in MARKERS for step in ("read", "added")}
EXPECTED_COUNTS = NO_MARKERS | {
    "records_read": 24,  # 20 records and workouts, and the workouts' events and routes
    "heart_rate_read": 11,
    "heart_rate_added": 11,
    "respiratory_rate_read": 2,
    "respiratory_rate_added": 2,
    "health_workouts_read": 2,
    "health_workouts_added": 2,
    "skipped": 9,  # 3 unusable, 2 types not imported, 2 workout events and 2 routes
    "workouts_linked": 1,
    "samples_attached": 9,
    "pulse_filled": 4,
}
NOTHING_NEW = EXPECTED_COUNTS | {
    "heart_rate_added": 0,
    "respiratory_rate_added": 0,
    "health_workouts_added": 0,
    "workouts_linked": 0,
    "samples_attached": 0,
    "pulse_filled": 0,
}


def table_counts(app: Flask) -> dict[str, int]:
    return {m.__tablename__: count(app, m) for m in (HealthSample, HealthWorkout, PulseReading)}


def test_import_attaches_samples_and_fills_missing_pulse_points(alice: Api, app: Flask) -> None:
    assert alice.put(workout_url(WORKOUT_ID), json=protocol_workout()).status_code == 201
    xml = scenario_export()
    response = upload(alice, xml)
    assert response.status_code == 201, response.json
    job = response.json
    assert response.headers["Location"] == job["url"] == f"/api/v1/imports/{job['id']}"
    assert job["status"] == "succeeded" and job["progress"] == 1.0 and job["kind"] == "apple_health"
    assert job["bytes_total"] == job["bytes_done"] == len(xml)
    assert job["counts"] == EXPECTED_COUNTS
    assert len(job["warnings"]) == 3 and any("not a number" in w for w in job["warnings"])
    assert any("400/min is outside 25-250" in w for w in job["warnings"])

    pulse = {p["point"]: p for p in alice.get(workout_url(WORKOUT_ID)).json["pulse"]}
    assert {point: p["bpm"] for point, p in pulse.items()} == {
        "before_1": 68,  # stored by the app: never changed
        "before_2": 150,
        "before_3": 158,
        "after_3": 140,
        "after_4": 101,
    }
    assert pulse["before_3"]["measured_at"] == "2026-11-21T07:53:01-08:00"  # the sample's time
    assert pulse["before_1"]["measured_at"] == "2026-11-21T07:29:30-08:00"

    with db_of(app).session() as session:
        attached = session.scalars(select(HealthSample).where(HealthSample.workout_id.is_not(None))).all()
        assert len(attached) == 9
        assert {s.started_at for s in attached} >= {datetime(2026, 11, 21, 15, 51, 58, tzinfo=timezone.utc)}
        linked = session.scalars(select(HealthWorkout).where(HealthWorkout.workout_id.is_not(None))).one()
        assert (linked.activity_type, linked.indoor, linked.hr_avg_bpm) == ("Running", False, 148.5)
        cycling = session.scalars(select(HealthWorkout).where(HealthWorkout.activity_type == "Cycling")).one()
        assert cycling.workout_id is None and cycling.indoor is True
        sources = session.scalars(
            select(HealthSample.source).where(
                HealthSample.started_at == datetime(2026, 11, 21, 15, 55, tzinfo=timezone.utc)
            )
        ).all()
        assert sorted(sources) == sorted(["Alice’s Apple Watch", PHONE])
        rr = session.scalars(select(HealthSample).where(HealthSample.kind == "respiratory_rate")).all()
        assert sorted(s.bpm for s in rr) == [13.9, 14.5] and all(s.workout_id is None for s in rr)


def test_reimporting_the_same_file_adds_nothing(alice: Api, app: Flask) -> None:
    alice.put(workout_url(WORKOUT_ID), json=protocol_workout())
    xml = scenario_export()
    assert upload(alice, xml).json["counts"] == EXPECTED_COUNTS
    before = table_counts(app)
    updated_at = alice.get(workout_url(WORKOUT_ID)).json["updated_at"]

    again = upload(alice, xml)
    assert again.status_code == 201 and again.json["counts"] == NOTHING_NEW
    # ...and the zipped export of the same data adds nothing either.
    zipped = upload(alice, export_zip(xml), filename="export.zip")
    assert zipped.status_code == 201 and zipped.json["counts"] == NOTHING_NEW
    assert table_counts(app) == before
    assert alice.get(workout_url(WORKOUT_ID)).json["updated_at"] == updated_at
    assert count(app, ImportJob) == 3


def test_zip_import_and_isolation_between_users(alice: Api, bob: Api, app: Flask) -> None:
    alice.put(workout_url(WORKOUT_ID), json=protocol_workout())
    response = upload(bob, export_zip(scenario_export()), filename="export.zip")
    assert response.status_code == 201
    counts = response.json["counts"]
    # Bob has no workouts: his samples attach to nothing, and Alice's workout (same times) is not his.
    assert counts == EXPECTED_COUNTS | {"workouts_linked": 0, "samples_attached": 0, "pulse_filled": 0}
    assert count(app, HealthSample, HealthSample.user_id == bob.user_id) == 13
    assert count(app, HealthSample, HealthSample.user_id == alice.user_id) == 0
    assert count(app, HealthSample, HealthSample.workout_id.is_not(None)) == 0
    assert [p["point"] for p in alice.get(workout_url(WORKOUT_ID)).json["pulse"]] == ["before_1"]
    assert bob.get(response.json["url"]).status_code == 200
    assert alice.get(response.json["url"]).status_code == 404


def broken_lines() -> tuple[bytes, int]:
    """Three good heart-rate records, then a mismatched end tag; returns the file and that tag's line."""
    text = scenario_export().decode()
    head = text.split(" <Record", 1)[0]
    good = "".join(heart_rate(t(clock), bpm) for clock, bpm in NEAR[:3])
    broken = head + good + ' <Record type="HKQuantityTypeIdentifierHeartRate" value="80">\n </Workout>\n'
    return broken.encode(), broken.count("\n")


def test_malformed_xml_answers_problem_naming_the_line_and_keeps_what_was_read(
    alice: Api, app: Flask
) -> None:
    data, line = broken_lines()
    response = upload(alice, data)
    assert response.status_code == 400 and response.mimetype == PROBLEM
    problem = response.json
    assert problem["type"].endswith("#problem-malformed-xml") and problem["title"] == "Malformed XML"
    assert f"line {line}, column 4: mismatched tag" in problem["detail"]  # at the tag name
    assert problem["errors"][0]["field"] == "file" and f"line {line}" in problem["errors"][0]["detail"]
    job = alice.get("/api/v1/imports").json["imports"][0]
    assert job["status"] == "failed" and job["error_line"] == line and "mismatched tag" in job["error"]
    # The records before the error were read whole: they are stored, and the job says so.
    assert job["counts"]["heart_rate_added"] == 3 == count(app, HealthSample)
    # Uploading the complete file later finishes the import without duplicates.
    fixed = upload(alice, scenario_export())
    assert fixed.json["counts"]["heart_rate_added"] == 11 - 3
    assert count(app, HealthSample) == 13


def test_truncated_upload_is_reported_as_such(alice: Api) -> None:
    data = scenario_export()
    response = upload(alice, data[: len(data) // 2])
    assert response.status_code == 400 and response.mimetype == PROBLEM
    assert "line " in response.json["detail"] and "ends too early" in response.json["detail"]


@pytest.mark.parametrize(
    ("data", "filename", "status", "says"),
    [
        (b"<html><body>not health data</body></html>", "export.xml", 422, "root element is <html>"),
        (b"%PDF-1.7 not an export", "export.pdf", 415, "neither a zip nor an XML file"),
        (b"", "export.xml", 422, "the file is empty"),
        (
            export_zip(b"<gpx/>", member="apple_health_export/workout-routes/r.gpx"),
            "export.zip",
            422,
            "no export.xml",
        ),
        (b"PK\x03\x04 but not really a zip", "export.zip", 422, "cannot be read"),
    ],
)
def test_uploads_that_are_not_exports_are_refused_and_store_nothing(
    alice: Api, app: Flask, data: bytes, filename: str, status: int, says: str
) -> None:
    response = upload(alice, data, filename)
    assert response.status_code == status and response.mimetype == PROBLEM
    assert says in response.json["detail"]
    assert count(app, HealthSample) == 0


def test_wrong_content_type_and_missing_file_part(alice: Api, app: Flask) -> None:
    response = alice.post("/api/v1/imports/apple-health", json={"file": "export.xml"})
    assert response.status_code == 415 and response.mimetype == PROBLEM
    assert "multipart/form-data" in response.json["detail"]
    response = upload(alice, scenario_export(), field="export")
    assert response.status_code == 422 and response.mimetype == PROBLEM
    assert response.json["errors"][0]["field"] == "file"
    assert count(app, ImportJob) == 0
    assert alice.post("/api/v1/imports/apple-health").status_code == 415


def configured(database_url: str, **config: object) -> tuple[Flask, Api]:
    app = create_app(app_config(database_url, **config))
    user_id, token = make_user(app, "carol")
    return app, Api(app, token, user_id)


def test_upload_limit_is_its_own_and_oversized_uploads_get_413(app: Flask, database_url: str) -> None:
    xml = scenario_export()  # about 7 kB
    big_app, carol = configured(database_url, MAX_CONTENT_LENGTH=2_000, IMPORT_MAX_CONTENT_LENGTH=10_000)
    assert upload(carol, xml).status_code == 201  # larger than the JSON limit, within the upload limit
    too_big = upload(carol, xml + b"<!--" + b"x" * 10_000 + b"-->")
    assert too_big.status_code == 413 and too_big.mimetype == PROBLEM
    assert "10000 bytes" in too_big.json["detail"]
    # JSON endpoints keep the small limit of the JSON body elsewhere in the API.
    assert carol.put(workout_url(uuid.uuid4()), json={"pad": "x" * 3_000}).status_code == 413
    db_of(big_app).dispose()


def test_large_upload_runs_as_a_background_job(app: Flask, database_url: str) -> None:
    job_app, carol = configured(database_url, IMPORT_INLINE_MAX_BYTES=0, IMPORT_BATCH_SIZE=4)
    response = upload(carol, scenario_export())
    assert response.status_code == 202
    job = response.json
    assert job["status"] in ("queued", "running", "succeeded") and response.headers["Location"] == job["url"]
    assert wait_for_job(job_app, uuid.UUID(job["id"]), timeout_s=60)
    done = carol.get(job["url"]).json
    assert done["status"] == "succeeded" and done["progress"] == 1.0
    assert done["counts"] == EXPECTED_COUNTS | {
        "workouts_linked": 0,
        "samples_attached": 0,
        "pulse_filled": 0,
    }
    assert not list(ImportSettings.from_app(job_app).upload_dir.glob("*.upload"))  # the upload is removed
    db_of(job_app).dispose()


def test_each_batch_is_stored_with_the_progress_that_describes_it(app: Flask, tmp_path: Path) -> None:
    user_id, _ = make_user(app, "dana")
    path = tmp_path / "export.xml"
    path.write_bytes(scenario_export())
    db = db_of(app)
    job = create_job(db, user_id, "apple_health", "export.xml")
    seen: list[tuple[int, int]] = []

    def check(bytes_done: int, bytes_total: int | None, counts: dict[str, int]) -> None:
        # Another session sees exactly what the job row claims, at every batch.
        with db.session() as session:
            stored = session.get(ImportJob, job.id)
            assert stored is not None and stored.status == "running"
            assert stored.bytes_done == bytes_done and stored.bytes_total == path.stat().st_size
            assert stored.counts["heart_rate_added"] == count(
                app, HealthSample, HealthSample.kind == "heart_rate"
            )
        seen.append((bytes_done, counts["heart_rate_added"]))

    settings = ImportSettings.from_app(app)
    settings = ImportSettings(3, settings.pulse_tolerance_s, tmp_path, 0, settings.stale_after_s)
    done = run_apple_health_job(db, job.id, path, settings, on_batch=check)
    assert done is not None and done.status == "succeeded"
    assert len(seen) >= 4 and seen == sorted(seen) and seen[-1] == (path.stat().st_size, 11)
    assert path.exists()  # the CLI's own file is never deleted


def test_a_job_that_stopped_progressing_is_reported_failed(app: Flask, database_url: str) -> None:
    stale_app, carol = configured(database_url, IMPORT_STALE_AFTER_S=0)
    job = create_job(db_of(stale_app), carol.user_id, "apple_health", "export.zip")
    response = carol.get(f"/api/v1/imports/{job.uuid}")
    assert response.status_code == 200
    assert response.json["status"] == "failed" and "interrupted" in response.json["error"]
    assert carol.get(f"/api/v1/imports/{uuid.uuid4()}").status_code == 404
    db_of(stale_app).dispose()


def test_cli_import_prints_counts_and_names_the_line_on_failure(app: Flask, tmp_path: Path) -> None:
    runner = app.test_cli_runner()
    runner.invoke(args=["users", "create", "erin"])
    good = tmp_path / "export.zip"
    good.write_bytes(export_zip(scenario_export()))
    result = runner.invoke(args=["import", "apple-health", "erin", str(good)])
    assert result.exit_code == 0, result.output
    assert "11 heart-rate samples (11 new), 2 respiratory-rate samples (2 new)" in result.output
    assert "9 skipped" in result.output
    assert "  skipped 2 WorkoutRoute: routes (GPS tracks) are not imported" in result.output
    again = runner.invoke(args=["import", "apple-health", "erin", str(good)])
    assert "11 heart-rate samples (0 new)" in again.output

    data, line = broken_lines()
    bad = tmp_path / "broken.xml"
    bad.write_bytes(data)
    failed = runner.invoke(args=["import", "apple-health", "erin", str(bad)])
    assert failed.exit_code == 1 and f"line {line}" in failed.output
    assert runner.invoke(args=["import", "apple-health", "nobody", str(good)]).exit_code == 1


@pytest.fixture(scope="module")
def synthetic_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, ExportSummary]]:
    """Two realistic exports, ~1 MB and ~4 MB. They start two days before the switch to daylight saving
    time, so the clock offset changes inside them."""
    folder = tmp_path_factory.mktemp("synthetic")
    out = {}
    for name, size in (("small", 1_000_000), ("large", 4_000_000)):
        path = folder / f"{name}.xml"
        out[name] = path, write_export_file(path, target_bytes=size, seed=7, first_day=date(2024, 3, 8))
    return out


BATCH = 250  # records per transaction in the memory test


def import_measuring_memory(app: Flask, path: Path, user_id: int) -> tuple[ImportJob, int]:
    db = db_of(app)
    job = create_job(db, user_id, "apple_health", path.name)
    base = ImportSettings.from_app(app)
    settings = ImportSettings(BATCH, base.pulse_tolerance_s, base.upload_dir, 0, base.stale_after_s)
    tracemalloc.start()
    try:
        done = run_apple_health_job(db, job.id, path, settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert done is not None and done.status == "succeeded", done and done.error
    return done, peak


def test_a_realistic_export_imports_with_bounded_memory(
    app: Flask, tmp_path: Path, synthetic_exports: dict[str, tuple[Path, ExportSummary]]
) -> None:
    # The first import compiles statements (one per table inserted into): not what we measure.
    warm_up = tmp_path / "warm-up.xml"
    warm_up.write_bytes(full_shape_export())
    import_measuring_memory(app, warm_up, make_user(app, "warm")[0])

    peaks = {}
    for name, (path, summary) in synthetic_exports.items():
        user_id, _ = make_user(app, name)
        done, peaks[name] = import_measuring_memory(app, path, user_id)
        mine = (HealthSample.user_id == user_id, HealthSample.kind == "heart_rate")
        assert done.counts["heart_rate_added"] == summary.heart_rate == count(app, HealthSample, *mine)
        assert done.counts["respiratory_rate_added"] == summary.respiratory_rate
        assert done.counts["health_workouts_added"] == summary.workouts
        for kind in MARKERS:
            assert done.counts[f"{kind}_added"] == getattr(summary, kind) > 0, kind
        assert done.counts["records_read"] == summary.records and done.counts["skipped"] == summary.skipped
    large_size = synthetic_exports["large"][0].stat().st_size
    assert large_size > 3 * synthetic_exports["small"][0].stat().st_size
    # What Python allocates at most is one batch, whatever the size of the file: 3.5x the file, same peak.
    assert peaks["large"] < 1.5 * peaks["small"], peaks
    assert peaks["large"] < large_size / 3, (
        f"peak {peaks['large'] / 1e6:.2f} MB, file {large_size / 1e6:.1f} MB"
    )


# ---- issue 16: an export of every shape, every record accounted for ------------------------------------


def test_an_export_with_every_record_type_counts_every_skip(alice: Api, app: Flask) -> None:
    response = upload(alice, full_shape_export())
    assert response.status_code == 201, response.json
    job = response.json
    assert {k: job["counts"][k] for k in FULL_SHAPE_COUNTS} == FULL_SHAPE_COUNTS
    assert job["skipped"] == FULL_SHAPE_SKIPPED
    read = sum(v for k, v in job["counts"].items() if k.endswith("_read") and k != "records_read")
    assert job["counts"]["records_read"] == read + job["counts"]["skipped"]
    # Only the unusable records are described one by one; whole types are in `skipped`.
    assert len(job["warnings"]) == 2
    assert any(
        "RestingHeartRate record of 2026-11-25" in w and "outside 25-250" in w for w in job["warnings"]
    )
    assert any("unit 'count'" in w for w in job["warnings"])
    assert {row["kind"]: (row["read"], row["added"]) for row in job["stored"]} == {
        "heart_rate": (2, 2),
        "respiratory_rate": (1, 1),
        "resting_heart_rate": (2, 2),
        "hrv_sdnn": (1, 1),
        "vo2_max": (1, 1),
        "walking_heart_rate_average": (1, 1),
        "health_workouts": (1, 1),
    }
    with db_of(app).session() as session:
        values = {(m.kind, m.local_date.isoformat()): m.value for m in session.scalars(select(FitnessMarker))}
    assert values == {
        ("resting_heart_rate", "2026-11-23"): 54,
        ("resting_heart_rate", "2026-11-16"): 52,
        ("hrv_sdnn", "2026-11-23"): 48.25,
        ("vo2_max", "2026-11-24"): 44.7,
        ("walking_heart_rate_average", "2026-11-23"): 98,
    }
    # The report is kept with the job, and the same file again stores nothing new but counts the same.
    assert alice.get(job["url"]).json["skipped"] == FULL_SHAPE_SKIPPED
    again = upload(alice, full_shape_export()).json
    assert again["skipped"] == FULL_SHAPE_SKIPPED and again["counts"]["vo2_max_added"] == 0
    assert count(app, FitnessMarker) == 5
