"""Health Auto Export pushes: both date formats, metrics and workouts in, re-sent syncs never duplicate,
bad points rejected naming the field with nothing stored."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from api_helpers import Api, workout_url
from flask import Flask
from interop_helpers import count, db_of
from sqlalchemy import select

from backend.imports.dates import parse_health_datetime
from backend.imports.records import MARKERS
from backend.models import FitnessMarker, HealthSample, HealthWorkout, ImportJob

URL = "/api/v1/imports/health-auto-export"
PROBLEM = "application/problem+json"
AEST = timezone(timedelta(hours=10))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-09-28 16:51:59 +1000", datetime(2024, 9, 28, 16, 51, 59, tzinfo=AEST)),
        ("2024-09-28 4:51:59 pm +1000", datetime(2024, 9, 28, 16, 51, 59, tzinfo=AEST)),
        ("2024-09-28 4:51:59 PM +10:00", datetime(2024, 9, 28, 16, 51, 59, tzinfo=AEST)),
        ("2024-09-28 4:51:59\u202fpm +1000", datetime(2024, 9, 28, 16, 51, 59, tzinfo=AEST)),  # iOS 17 space
        ("2024-09-28 12:05:00 am +1000", datetime(2024, 9, 28, 0, 5, tzinfo=AEST)),
        ("2024-09-28 12:05:00 pm +1000", datetime(2024, 9, 28, 12, 5, tzinfo=AEST)),
        ("2024-01-15 23:00:00 -0600", datetime(2024, 1, 15, 23, tzinfo=timezone(timedelta(hours=-6)))),
        ("2024-09-28T06:51:59Z", datetime(2024, 9, 28, 6, 51, 59, tzinfo=timezone.utc)),
    ],
)
def test_both_date_formats_parse_to_the_same_instant(text: str, expected: datetime) -> None:
    parsed = parse_health_datetime(text)
    assert parsed == expected and parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "text",
    ["2024-09-28 16:51:59", "2024-09-28 13:51:59 pm +1000", "28/09/2024 16:51", "2024-02-30 10:00:00 +0000"],
)
def test_dates_without_offset_or_impossible_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="2024"):
        parse_health_datetime(text)


def hr(date: str, avg: float, low: float | None = None, high: float | None = None) -> dict[str, Any]:
    return {"date": date, "Min": low if low is not None else avg - 3, "Avg": avg, "Max": high or avg + 4}


def push() -> dict[str, Any]:
    """A sync as the app sends it: per-minute heart rate in both date styles, RR, a metric we ignore,
    and a workout with heart-rate data (v2 style) and recovery (v1 style, `qty`)."""
    return {
        "data": {
            "metrics": [
                {
                    "name": "heart_rate",
                    "units": "bpm",
                    "data": [
                        hr("2024-09-28 16:40:00 +1000", 64),
                        hr("2024-09-28 4:41:00 pm +1000", 66),
                        {**hr("2024-09-28 4:42:00 pm +1000", 70), "source": "Alice’s Apple Watch"},
                    ],
                },
                {
                    "name": "respiratory_rate",
                    "units": "count/min",
                    "data": [
                        {"date": "2024-09-28 02:00:00 +1000", "qty": 14.5},
                        {"date": "2024-09-28 2:05:00 am +1000", "qty": 13.5},
                    ],
                },
                {"name": "step_count", "units": "count", "data": [{"date": "yesterday-ish", "qty": "many"}]},
            ],
            "workouts": [
                {
                    "id": "6A1D7E8C-2B9F-4C3A-8E1D-5F6A7B8C9D0E",
                    "name": "Outdoor Run",
                    "start": "2024-09-28 5:00:00 pm +1000",
                    "end": "2024-09-28 5:30:00 pm +1000",
                    "location": "Outdoor",
                    "activeEnergyBurned": {"qty": 312.4, "units": "kcal"},
                    "heartRateData": [
                        hr("2024-09-28 5:10:00 pm +1000", 150, 141, 158),
                        hr("2024-09-28 5:20:00 pm +1000", 162, 155, 171),
                    ],
                    "heartRateRecovery": [
                        {"date": "2024-09-28 5:31:00 pm +1000", "qty": 131, "units": "bpm"}
                    ],
                }
            ],
        }
    }


NO_MARKERS = {f"{kind}_{step}": 0 for kind in MARKERS for step in ("read", "added")}
FIRST_COUNTS = NO_MARKERS | {
    "records_read": 10,
    "heart_rate_read": 6,
    "heart_rate_added": 6,
    "respiratory_rate_read": 2,
    "respiratory_rate_added": 2,
    "health_workouts_read": 1,
    "health_workouts_added": 1,
    "skipped": 1,  # the step_count point
    "workouts_linked": 0,
    "samples_attached": 0,
    "pulse_filled": 0,
}


def test_a_push_stores_samples_and_workouts(alice: Api, app: Flask) -> None:
    response = alice.post(URL, json=push())
    assert response.status_code == 201, response.json
    job = response.json
    assert job["kind"] == "health_auto_export" and job["status"] == "succeeded"
    assert job["counts"] == FIRST_COUNTS and response.headers["Location"] == job["url"]
    assert alice.get(job["url"]).json["counts"] == FIRST_COUNTS
    with db_of(app).session() as session:
        samples = {
            s.started_at: s
            for s in session.scalars(select(HealthSample).where(HealthSample.kind == "heart_rate"))
        }
        # "4:41:00 pm +1000" is 06:41 UTC; Min/Avg/Max are kept.
        minute = samples[datetime(2024, 9, 28, 6, 41, tzinfo=timezone.utc)]
        assert (minute.bpm, minute.bpm_min, minute.bpm_max, minute.source) == (
            66,
            63,
            70,
            "Health Auto Export",
        )
        assert samples[datetime(2024, 9, 28, 6, 42, tzinfo=timezone.utc)].source == "Alice’s Apple Watch"
        assert samples[datetime(2024, 9, 28, 7, 31, tzinfo=timezone.utc)].bpm == 131  # recovery, `qty`
        rr = session.scalars(select(HealthSample.started_at).where(HealthSample.kind == "respiratory_rate"))
        assert sorted(rr) == [
            datetime(2024, 9, 27, 16, 0, tzinfo=timezone.utc),
            datetime(2024, 9, 27, 16, 5, tzinfo=timezone.utc),
        ]
        run = session.scalars(select(HealthWorkout)).one()
        assert (run.activity_type, run.indoor, run.source) == ("Outdoor Run", False, "Health Auto Export")
        assert (run.hr_avg_bpm, run.hr_min_bpm, run.hr_max_bpm) == (156, 141, 171)
        assert run.ended_at - run.started_at == timedelta(minutes=30)


def test_overlapping_resends_never_duplicate(alice: Api, app: Flask) -> None:
    assert alice.post(URL, json=push()).status_code == 201
    stored = count(app, HealthSample), count(app, HealthWorkout)
    again = alice.post(URL, json=push())
    assert again.status_code == 201
    assert again.json["counts"] == FIRST_COUNTS | {
        "heart_rate_added": 0,
        "respiratory_rate_added": 0,
        "health_workouts_added": 0,
    }
    assert (count(app, HealthSample), count(app, HealthWorkout)) == stored

    # The next sync re-sends the last two minutes and adds one new one, in the other date style.
    overlapping = push()
    heart = overlapping["data"]["metrics"][0]
    heart["data"] = [
        hr("2024-09-28 16:41:00 +1000", 66),
        heart["data"][2],
        hr("2024-09-28 4:43:00 pm +1000", 72),
    ]
    overlapping["data"]["metrics"] = [heart]
    overlapping["data"]["workouts"] = []
    response = alice.post(URL, json=overlapping)
    assert (
        response.json["counts"]["heart_rate_read"] == 3 and response.json["counts"]["heart_rate_added"] == 1
    )
    assert count(app, HealthSample) == stored[0] + 1
    assert count(app, ImportJob) == 3


def test_a_push_fills_pulse_points_of_a_workout(alice: Api, app: Flask) -> None:
    workout_id = uuid.uuid4()
    body = {
        "started_at": "2024-09-28T16:55:00+10:00",
        "activity": "running",
        "environment": "outdoor",
        "model_version": "tclstm-2026.11",
        "stages": [{"stage": 3, "started_at": "2024-09-28T17:30:00+10:00", "segments": []}],
    }
    assert alice.put(workout_url(workout_id), json=body).status_code == 201
    response = alice.post(URL, json=push())
    counts = response.json["counts"]
    # The run overlaps the workout; after_3 (17:31:00) is the recovery sample, before_3 (17:30) too.
    assert counts["workouts_linked"] == 1 and counts["pulse_filled"] == 2
    pulse = {p["point"]: p["bpm"] for p in alice.get(workout_url(workout_id)).json["pulse"]}
    assert pulse == {"before_3": 131, "after_3": 131}
    assert counts["samples_attached"] == 3  # 17:10, 17:20, 17:31 lie in the widened span


def test_implausible_values_are_skipped_with_a_warning(alice: Api, app: Flask) -> None:
    body = push()
    body["data"]["metrics"][0]["data"].append(hr("2024-09-28 4:44:00 pm +1000", 300))
    response = alice.post(URL, json=body)
    assert response.status_code == 201
    assert response.json["counts"]["skipped"] == 2 and response.json["counts"]["heart_rate_added"] == 6
    assert any("300/min is outside 25-250" in w for w in response.json["warnings"])
    assert {"type": "heart_rate", "reason": "value outside the plausible range", "count": 1} in (
        response.json["skipped"]
    )


def set_path(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return body


@pytest.mark.parametrize(
    ("path", "value", "field", "says"),
    [
        (
            ("data", "metrics", 0, "data", 1, "date"),
            "28/09/2024 4:41 pm",
            "data.metrics[0].data[1].date",
            "is not a date",
        ),
        (
            ("data", "metrics", 0, "data", 1, "date"),
            "2024-09-28 16:41:00",
            "data.metrics[0].data[1].date",
            "no UTC offset",
        ),
        (
            ("data", "metrics", 1, "data", 0),
            {"date": "2024-09-28 02:00:00 +1000"},
            "data.metrics[1].data[0]",
            "needs a value",
        ),
        (("data", "metrics", 1, "data", 0, "qty"), "fourteen", "data.metrics[1].data[0].qty", "number"),
        (("data", "metrics", 0, "units"), "count/s", "data.metrics[0].units", "not a rate per minute"),
        (
            ("data", "workouts", 0, "end"),
            "2024-09-28 4:00:00 pm +1000",
            "data.workouts[0].end",
            "ends before",
        ),
        (
            ("data", "workouts", 0, "heartRateData", 1, "date"),
            "soon",
            "data.workouts[0].heartRateData[1].date",
            "not a date",
        ),
        (("data", "workouts", 0, "start"), 1727506800, "data.workouts[0].start", "string"),
    ],
)
def test_malformed_points_reject_the_push_naming_the_field(
    alice: Api, app: Flask, path: tuple[Any, ...], value: Any, field: str, says: str
) -> None:
    response = alice.post(URL, json=set_path(push(), path, value))
    assert response.status_code == 422 and response.mimetype == PROBLEM
    fields = {e["field"]: e["detail"] for e in response.json["errors"]}
    assert field in fields and says in fields[field], fields
    assert count(app, HealthSample) == count(app, HealthWorkout) == count(app, ImportJob) == 0


def test_not_json_at_all(alice: Api, app: Flask) -> None:
    response = alice.post(URL, data='{"data": {"metrics": [', content_type="application/json")
    assert response.status_code == 400 and response.json["type"].endswith("#problem-malformed-json")
    assert alice.post(URL, data="data=1", content_type="text/plain").status_code == 415
    assert alice.post(URL, json={"metrics": []}).status_code == 422  # no `data`
    assert count(app, ImportJob) == 0


def test_cli_imports_a_push_file(app: Flask, tmp_path: Path) -> None:
    runner = app.test_cli_runner()
    runner.invoke(args=["users", "create", "gina"])
    path = tmp_path / "push.json"
    path.write_text(json.dumps(push()))
    result = runner.invoke(args=["import", "health-auto-export", "gina", str(path)])
    assert result.exit_code == 0, result.output
    assert "6 heart-rate samples (6 new), 2 respiratory-rate samples (2 new)" in result.output
    path.write_text(json.dumps(set_path(push(), ("data", "metrics", 0, "data", 0, "date"), "now")))
    failed = runner.invoke(args=["import", "health-auto-export", "gina", str(path)])
    assert failed.exit_code == 1 and "data.metrics[0].data[0].date" in failed.output


# ---- issue 16: fitness markers, points' own end, workouts' real source, nothing dropped silently --------

NNBSP = "\u202f"  # iOS's narrow no-break space before am/pm


def marker_push() -> dict[str, Any]:
    """A v2 sync with the four fitness markers (units as the app writes them), a 12-hour phone's dates,
    a point with its own end, workouts from other apps, and data Respira does not import."""
    return {
        "data": {
            "metrics": [
                {
                    "name": "resting_heart_rate",
                    "units": "bpm",
                    "data": [
                        {
                            "date": f"2026-11-23 12:00:00{NNBSP}am -0800",
                            "qty": 54,
                            "source": "Alice’s Apple Watch",
                        },
                        {"date": "2026-11-16 00:00:00 -0800", "qty": 52, "source": "Alice’s Apple Watch"},
                    ],
                },
                {
                    "name": "heart_rate_variability",
                    "units": "ms",
                    "data": [{"date": f"2026-11-23 7:41:13{NNBSP}am -0800", "qty": 48.25}],
                },
                {
                    "name": "vo2_max",
                    "units": "ml/(kg·min)",
                    "data": [{"date": "2026-11-24 18:02:00 -0800", "qty": 44.7}],
                },
                {
                    "name": "walking_heart_rate_average",
                    "units": "bpm",
                    "data": [{"date": "2026-11-23 00:00:00 -0800", "qty": 98}],
                },
                {
                    "name": "respiratory_rate",
                    "units": "count/min",
                    "data": [
                        {
                            "date": "2026-11-24 02:00:00 -0800",
                            "end": "2026-11-24 02:02:30 -0800",
                            "qty": 14.0,
                            "source": "Alice’s Apple Watch",
                        }
                    ],
                },
                {
                    "name": "step_count",
                    "units": "count",
                    "data": [{"date": "2026-11-23 09:00:00 -0800", "qty": 120}] * 3,
                },
                {
                    "name": "sleep_analysis",
                    "units": "hr",
                    "data": [
                        {"date": "2026-11-23", "totalSleep": 7.1},
                        {"date": "2026-11-24", "totalSleep": 6.4},
                    ],
                },
            ],
            "workouts": [
                {  # version 2 with its own source
                    "id": "0C1F3B2A-6D5E-4F70-9A8B-1C2D3E4F5A6B",
                    "name": "Outdoor Cycling",
                    "source": "Connect",
                    "start": "2026-11-24 17:00:00 -0800",
                    "end": "2026-11-24 17:45:00 -0800",
                    "duration": 2700,
                    "heartRate": {
                        "min": {"qty": 101, "units": "bpm"},
                        "avg": {"qty": 139, "units": "bpm"},
                        "max": {"qty": 166, "units": "bpm"},
                    },
                    "route": [
                        {"latitude": 47.6, "longitude": -122.3, "timestamp": "2026-11-24 17:00:05 -0800"},
                        {"latitude": 47.61, "longitude": -122.31, "timestamp": "2026-11-24 17:00:10 -0800"},
                    ],
                },
                {  # version 1: the recording app only on its heart-rate points
                    "name": "HIIT",
                    "start": f"2026-11-25 6:30:00{NNBSP}pm -0800",
                    "end": f"2026-11-25 6:50:00{NNBSP}pm -0800",
                    "heartRateData": [
                        {"date": "2026-11-25 18:35:00 -0800", "qty": 151, "source": "JustFit"},
                        {"date": "2026-11-25 18:45:00 -0800", "qty": 163, "source": "JustFit"},
                    ],
                },
            ],
            "stateOfMind": [{"id": "x", "valence": 0.3}],
        }
    }


def test_fitness_markers_end_and_real_sources_are_kept(alice: Api, app: Flask) -> None:
    response = alice.post(URL, json=marker_push())
    assert response.status_code == 201, response.json
    counts = response.json["counts"]
    assert {k: counts[k] for k in NO_MARKERS} == {
        "resting_heart_rate_read": 2,
        "resting_heart_rate_added": 2,
        "hrv_sdnn_read": 1,
        "hrv_sdnn_added": 1,
        "vo2_max_read": 1,
        "vo2_max_added": 1,
        "walking_heart_rate_average_read": 1,
        "walking_heart_rate_average_added": 1,
    }
    with db_of(app).session() as session:
        markers = {(m.kind, m.local_date.isoformat()): m for m in session.scalars(select(FitnessMarker))}
        # 12:00 am on the 23rd (Pacific) is 08:00 UTC, and its day stays the 23rd on the phone's clock.
        resting = markers[("resting_heart_rate", "2026-11-23")]
        assert resting.value == 54 and resting.started_at == datetime(2026, 11, 23, 8, tzinfo=timezone.utc)
        assert markers[("hrv_sdnn", "2026-11-23")].value == 48.25
        assert markers[("vo2_max", "2026-11-24")].value == 44.7
        assert markers[("walking_heart_rate_average", "2026-11-23")].source == "Health Auto Export"
        rr = session.scalars(select(HealthSample).where(HealthSample.kind == "respiratory_rate")).one()
        assert rr.ended_at - rr.started_at == timedelta(minutes=2, seconds=30)  # the point's own end
        sources = {w.activity_type: w.source for w in session.scalars(select(HealthWorkout))}
        assert sources == {"Outdoor Cycling": "Connect", "HIIT": "JustFit"}
        cycling = session.scalars(select(HealthWorkout).where(HealthWorkout.source == "Connect")).one()
        assert (cycling.hr_min_bpm, cycling.hr_avg_bpm, cycling.hr_max_bpm) == (101, 139, 166)
    again = alice.post(URL, json=marker_push()).json["counts"]
    assert again["resting_heart_rate_read"] == 2 and again["resting_heart_rate_added"] == 0
    assert count(app, FitnessMarker) == 5


def test_everything_not_imported_is_counted_as_skipped_with_a_warning(alice: Api) -> None:
    job = alice.post(URL, json=marker_push()).json
    assert sorted(job["skipped"], key=lambda s: s["type"]) == [
        {"type": "sleep_analysis", "reason": "not a record type Respira imports", "count": 2},
        {"type": "stateOfMind", "reason": "not a record type Respira imports", "count": 1},
        {"type": "step_count", "reason": "not a record type Respira imports", "count": 3},
        {"type": "workout route", "reason": "not a record type Respira imports", "count": 2},
    ]
    counts = job["counts"]
    assert counts["skipped"] == 8
    read = sum(v for k, v in counts.items() if k.endswith("_read") and k != "records_read")
    assert counts["records_read"] == read + counts["skipped"] == 5 + 3 + 2 + 8  # markers, samples, workouts
    assert any("'step_count' points: 3 not imported" in w for w in job["warnings"])
    assert any("'stateOfMind' entries: 1 not imported" in w for w in job["warnings"])
    assert {row["kind"]: row["added"] for row in job["stored"]}["vo2_max"] == 1


@pytest.mark.parametrize(
    ("metric", "units", "says"),
    [(1, "s", "not a unit of heart_rate_variability"), (2, "kg", "not a unit of vo2_max")],
)
def test_a_marker_in_a_unit_respira_cannot_convert_rejects_the_push(
    alice: Api, app: Flask, metric: int, units: str, says: str
) -> None:
    response = alice.post(URL, json=set_path(marker_push(), ("data", "metrics", metric, "units"), units))
    assert response.status_code == 422
    fields = {e["field"]: e["detail"] for e in response.json["errors"]}
    assert says in fields[f"data.metrics[{metric}].units"]
    assert count(app, FitnessMarker) == count(app, HealthSample) == 0


def test_a_point_ending_before_it_starts_is_refused(alice: Api, app: Flask) -> None:
    body = set_path(marker_push(), ("data", "metrics", 4, "data", 0, "end"), "2026-11-24 01:00:00 -0800")
    response = alice.post(URL, json=body)
    fields = {e["field"]: e["detail"] for e in response.json["errors"]}
    assert response.status_code == 422 and "ends before" in fields["data.metrics[4].data[0].end"]
