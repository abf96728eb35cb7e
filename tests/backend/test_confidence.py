"""Confidence end to end (issue 19), on both databases: readings without a rate and low-confidence
readings go in through the contract, stay out of every median, are counted where they were left out,
and come out again in the exports. Old clients' payloads keep working and keep their numbers.

The rule (backend.domain): a reading counts toward its stage median when it has a rate and either no
confidence or one of at least RR_CONFIDENCE_MIN (0.3); a stage with fewer than MIN_CONFIDENT_READINGS
(1) confident readings has no median: "not enough breathing heard".
"""

from __future__ import annotations

import copy
import csv
import io
import uuid
from typing import Any

import pytest
from api_helpers import Api, sample_workout, workout_url
from fhir.resources.R4B.bundle import Bundle as R4BBundle
from fhir_vital_signs import bundle_problems
from fhirclient.models.bundle import Bundle as R4Bundle
from flask import Flask
from flask.testing import FlaskClient
from omh_validation import data_point_errors
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from web_helpers import elements, login, set_password

from backend import domain
from backend.db import EXTENSION_KEY, Database
from backend.models import Segment, Stage, StageSummary, Workout

W = uuid.UUID("19191919-0000-4000-8000-000000000001")
STAGE_STARTS = {1: "07:30", 2: "07:50", 3: "07:52", 4: "07:58"}


def reading(start_s: float, rr_bpm: float | None, rr_confidence: float | None = None, **extra: Any) -> dict:
    body: dict[str, Any] = {"start_s": start_s, "duration_s": 5.0, "rr_bpm": rr_bpm, **extra}
    if rr_confidence is not None:
        body["rr_confidence"] = rr_confidence
    return body


def noisy(start_s: float, rr_confidence: float = 0.1) -> dict[str, Any]:
    return reading(start_s, None, rr_confidence, reason="too_noisy")


def workout(day: str, stages: dict[int, list[dict[str, Any]]], pulse: dict[str, float] | None = None) -> dict:
    return {
        "started_at": f"2026-11-{day}T07:30:00-08:00",
        "activity": "running",
        "environment": "indoor",
        "model_version": "respira-v2",
        "stages": [
            {"stage": n, "started_at": f"2026-11-{day}T{STAGE_STARTS[n]}:00-08:00", "segments": segs}
            for n, segs in stages.items()
        ],
        "pulse": [{"point": p, "bpm": bpm} for p, bpm in (pulse or {}).items()],
    }


def summaries_of(app: Flask, workout_id: uuid.UUID) -> dict[int, dict[str, Any]]:
    db: Database = app.extensions[EXTENSION_KEY]
    with db.session() as session:
        rows = session.execute(
            select(StageSummary.__table__)
            .join(Workout, Workout.id == StageSummary.workout_id)
            .where(Workout.uuid == workout_id)
        ).mappings()
        return {row["stage"]: dict(row) for row in rows}


def stage_trends(api: Api) -> dict[int, dict[str, Any]]:
    return {s["stage"]: s for s in api.get("/api/v1/trends/stages").json["stages"]}


# ---- the contract ---------------------------------------------------------------------------------------


def test_old_payloads_replay_unchanged(alice: Api) -> None:
    """Today's payloads (no rr_confidence, no reason: api_helpers.sample_workout is the documented example)
    are accepted as before, come back with the new fields null, and every reading counts."""
    assert alice.put(workout_url(W), json=sample_workout()).status_code == 201
    append = {"segments": [{"start_s": 12.0, "duration_s": 6.0, "rr_bpm": 16.5, "breath_class": "normal"}]}
    assert alice.post(f"{workout_url(W)}/stages/1/segments", json=append).status_code == 201
    segments = alice.get(workout_url(W)).json["stages"][0]["segments"]
    assert [(s["rr_bpm"], s["rr_confidence"], s["reason"]) for s in segments] == [
        (14.2, None, None),
        (15.0, None, None),
        (16.5, None, None),
    ]
    stages = stage_trends(alice)
    assert stages[1]["rr"]["points"] == [15.0] and stages[2]["rr"]["points"] == [38.5]  # medians of all
    for n in (1, 2, 3, 4):
        assert stages[n]["rr_left_out"] == {
            "readings_without_rate": 0,
            "readings_low_confidence": 0,
            "not_enough_heard": 0,
        }


def test_a_reading_without_a_rate_needs_a_reason_and_is_stored_as_sent(alice: Api) -> None:
    body = workout(
        "23", {1: [reading(0, 14.0, 0.8), noisy(5, 0.12), reading(10, None, 0.0, reason="no_breathing")]}
    )
    assert alice.put(workout_url(W), json=body).status_code == 201
    segments = alice.get(workout_url(W)).json["stages"][0]["segments"]
    assert [(s["rr_bpm"], s["rr_confidence"], s["reason"]) for s in segments] == [
        (14.0, 0.8, None),
        (None, 0.12, "too_noisy"),
        (None, 0.0, "no_breathing"),
    ]
    # omitting rr_bpm is the same as null
    append = {"segments": [{"start_s": 15.0, "duration_s": 5.0, "reason": "too_noisy"}]}
    assert alice.post(f"{workout_url(W)}/stages/1/segments", json=append).status_code == 201
    assert alice.get(workout_url(W)).json["stages"][0]["segments"][3]["rr_bpm"] is None


@pytest.mark.parametrize(
    ("segment", "field", "words"),
    [
        ({"rr_bpm": None}, "reason", "needs a reason"),
        ({}, "reason", "needs a reason"),  # rr_bpm left out and no reason
        ({"rr_bpm": 14.0, "reason": "too_noisy"}, "reason", "only for a reading without a rate"),
        ({"rr_bpm": 14.0, "rr_confidence": 1.5}, "rr_confidence", "less than or equal to 1"),
        ({"rr_bpm": 14.0, "rr_confidence": -0.1}, "rr_confidence", "greater than or equal to 0"),
        ({"rr_bpm": None, "reason": "quiet"}, "reason", "'no_breathing' or 'too_noisy'"),
        ({"rr_bpm": None, "reason": "too_noisy", "rr_confidence": "0.2"}, "rr_confidence", "valid number"),
    ],
)
def test_bad_readings_are_refused_naming_the_field(
    alice: Api, segment: dict[str, Any], field: str, words: str
) -> None:
    bad = {"start_s": 0.0, "duration_s": 5.0, **segment}
    response = alice.put(workout_url(W), json=workout("23", {2: [reading(5, 40.0), bad]}))
    assert response.status_code == 422, response.json
    assert response.json["errors"][0]["field"] == f"stages[0].segments[1].{field}"
    assert words in response.json["errors"][0]["detail"]
    assert alice.get(workout_url(W)).status_code == 404  # nothing stored
    # the append endpoint holds the same rules, and stores nothing of a refused body
    other = uuid.uuid4()
    assert alice.put(workout_url(other), json=workout("24", {2: [reading(5, 40.0)]})).status_code == 201
    append = alice.post(
        f"{workout_url(other)}/stages/2/segments", json={"segments": [reading(10, 41.0), bad]}
    )
    assert append.status_code == 422, append.json
    assert append.json["errors"][0]["field"] == f"segments[1].{field}"
    assert len(alice.get(workout_url(other)).json["stages"][0]["segments"]) == 1


def test_the_database_holds_the_same_rules(app: Flask, alice: Api) -> None:
    """Rows that bypass the API (imports, SQL consoles) cannot hold a rate and a reason, neither, or a
    confidence outside 0-1."""
    assert alice.put(workout_url(W), json=workout("23", {1: [reading(0, 14.0)]})).status_code == 201
    db: Database = app.extensions[EXTENSION_KEY]
    with db.session() as session:
        stage_id = session.scalar(select(Stage.id))
    for values in (
        {"rr_bpm": None},
        {"rr_bpm": 12.0, "reason": "too_noisy"},
        {"rr_bpm": None, "reason": "quiet"},
        {"rr_bpm": 12.0, "rr_confidence": 1.2},
    ):
        with db.session(write=True) as session, pytest.raises(IntegrityError), session.begin():
            session.execute(insert(Segment).values(stage_id=stage_id, start_s=30.0, duration_s=5.0, **values))


# ---- the rule in the summaries and trends -------------------------------------------------------------


def test_a_stage_all_too_noisy_has_no_median_and_is_counted(app: Flask, alice: Api) -> None:
    body = workout(
        "23",
        {
            1: [reading(0, 14.0, 0.9), reading(5, 15.0, 0.8)],
            2: [noisy(0), noisy(5, 0.2), noisy(10, 0.0), noisy(15)],
            3: [reading(0, 36.0, 0.7)],
        },
        {"before_2": 150, "before_3": 158, "after_3": 140},
    )
    assert alice.put(workout_url(W), json=body).status_code == 201
    stored = summaries_of(app, W)
    assert stored[2]["segment_count"] == 4 and stored[2]["no_rate_count"] == 4
    assert stored[2]["rr_median_bpm"] is None and stored[2]["low_confidence_count"] == 0
    assert stored[1]["rr_median_bpm"] == 14.5 and stored[3]["rr_median_bpm"] == 36.0

    stages = stage_trends(alice)
    assert stages[2]["rr"]["n"] == 0 and stages[2]["rr"]["median"] is None  # no stage-2 median at all
    assert stages[2]["pulse"]["points"] == [150]  # the pulse of that stage is still there
    assert stages[2]["rr_left_out"] == {
        "readings_without_rate": 4,
        "readings_low_confidence": 0,
        "not_enough_heard": 1,
    }
    assert stages[1]["rr_left_out"]["not_enough_heard"] == 0
    pairs = {s["stage"]: s for s in alice.get("/api/v1/trends/rr-vs-pulse").json["stages"]}
    assert pairs[2]["n"] == 0 and pairs[3]["n"] == 1
    (week,) = alice.get("/api/v1/trends/weekly").json["weeks"]
    assert week["peak_rr_bpm"] == 36.0  # stage 3 alone: stage 2 was not heard
    assert week["rr_left_out"][1] == {
        "stage": 2,
        "readings_without_rate": 4,
        "readings_low_confidence": 0,
        "not_enough_heard": 1,
    }


def test_confidence_filtering_changes_the_medians_exactly_as_documented(app: Flask, alice: Api) -> None:
    stage_1 = [
        reading(0, 12.0, 0.9),
        reading(5, 30.0, 0.1),  # below 0.3: out
        reading(10, 14.0),  # no confidence (an old-style reading): counts
        reading(15, 13.0, domain.RR_CONFIDENCE_MIN),  # exactly at the threshold: counts
        reading(20, 40.0, 0.29),  # out
        noisy(25),  # no rate: out
    ]
    stage_4 = [reading(0, 22.0, 0.05), reading(5, 26.0, 0.2)]  # rates, all below the threshold
    body = workout("23", {1: stage_1, 4: stage_4}, {"before_1": 60, "after_4": 100})
    assert alice.put(workout_url(W), json=body).status_code == 201
    stored = summaries_of(app, W)
    # counted: 12, 14, 13 -> 13 (all six readings' median would be 14; the five rates' 14 too)
    assert stored[1]["rr_median_bpm"] == 13.0
    assert (stored[1]["no_rate_count"], stored[1]["low_confidence_count"]) == (1, 2)
    assert stored[4]["rr_median_bpm"] is None and stored[4]["low_confidence_count"] == 2
    stages = stage_trends(alice)
    assert stages[1]["rr"]["points"] == [13.0]
    assert stages[1]["rr_left_out"] == {
        "readings_without_rate": 1,
        "readings_low_confidence": 2,
        "not_enough_heard": 0,
    }
    assert stages[4]["rr_left_out"] == {
        "readings_without_rate": 0,
        "readings_low_confidence": 2,
        "not_enough_heard": 1,
    }
    (week,) = alice.get("/api/v1/trends/weekly").json["weeks"]
    assert week["resting_rr_bpm"] == 13.0 and week["rr_recovery_bpm"] is None

    # An append that brings a confident reading gives stage 4 its median, from that reading alone.
    append = {"segments": [reading(10, 24.5, 0.6)]}
    assert alice.post(f"{workout_url(W)}/stages/4/segments", json=append).status_code == 201
    assert summaries_of(app, W)[4]["rr_median_bpm"] == 24.5
    assert stage_trends(alice)[4]["rr_left_out"]["not_enough_heard"] == 0


def test_the_minimum_of_confident_readings_is_the_one_constant(
    app: Flask, alice: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raising MIN_CONFIDENT_READINGS turns a stage with fewer confident readings into "not enough
    breathing heard" everywhere the rule applies (summaries, so trends; the workout page)."""
    monkeypatch.setattr(domain, "MIN_CONFIDENT_READINGS", 3)
    body = workout(
        "23",
        {
            1: [reading(0, 12.0, 0.9), reading(5, 14.0, 0.9), reading(10, 30.0, 0.1)],
            2: [reading(0, 40.0, 0.9), reading(5, 42.0), reading(10, 41.0, 0.5)],
        },
    )
    assert alice.put(workout_url(W), json=body).status_code == 201
    stored = summaries_of(app, W)
    assert stored[1]["rr_median_bpm"] is None and stored[2]["rr_median_bpm"] == 41.0
    assert stage_trends(alice)[1]["rr_left_out"]["not_enough_heard"] == 1


# ---- the exports --------------------------------------------------------------------------------------


@pytest.fixture
def mixed(alice: Api) -> Api:
    body = workout(
        "23",
        {
            1: [
                reading(0, 14.0, 0.8),
                noisy(5, 0.12),
                reading(10, None, 0.0, reason="no_breathing"),
                reading(15, 15.0),
            ]
        },
    )
    assert alice.put(workout_url(W), json=body).status_code == 201
    return alice


def export(api: Api, fmt: str) -> Any:
    response = api.get(f"/api/v1/export?format={fmt}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def test_json_export_round_trips_nulls_and_confidences(mixed: Api, bob: Api) -> None:
    document = export(mixed, "json").json
    segments = document["workouts"][0]["stages"][0]["segments"]
    assert [(s["rr_bpm"], s["rr_confidence"], s["reason"]) for s in segments] == [
        (14.0, 0.8, None),
        (None, 0.12, "too_noisy"),
        (None, 0.0, "no_breathing"),
        (15.0, None, None),
    ]
    assert bob.post("/api/v1/imports/json", json=document).status_code == 201
    restored = export(bob, "json").json["workouts"]
    assert restored == document["workouts"]
    assert stage_trends(bob)[1]["rr_left_out"]["readings_without_rate"] == 2


def test_csv_export_has_the_confidence_and_reason_columns(mixed: Api) -> None:
    rows = [r for r in csv.DictReader(io.StringIO(export(mixed, "csv").get_data(as_text=True)))]
    segments = [(r["rr_bpm"], r["rr_confidence"], r["reason"]) for r in rows if r["record"] == "segment"]
    assert segments == [
        ("14.0", "0.8", ""),
        ("", "0.12", "too_noisy"),
        ("", "0.0", "no_breathing"),
        ("15.0", "", ""),
    ]


def test_fhir_export_gives_readings_without_a_rate_a_data_absent_reason(mixed: Api) -> None:
    bundle = export(mixed, "fhir").json
    R4Bundle(copy.deepcopy(bundle), strict=True)
    R4BBundle.model_validate(bundle)
    assert bundle_problems(bundle) == {}
    observations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    by_start = {o["effectivePeriod"]["start"]: o for o in observations}
    noisy_obs = by_start["2026-11-23T07:30:05-08:00"]
    assert "valueQuantity" not in noisy_obs
    assert noisy_obs["dataAbsentReason"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
        "code": "unknown",
        "display": "Unknown",
    }
    assert noisy_obs["dataAbsentReason"]["coding"][1]["code"] == "too_noisy"
    assert by_start["2026-11-23T07:30:10-08:00"]["dataAbsentReason"]["text"] == "No breathing heard"

    def confidence(obs: dict[str, Any]) -> Any:
        found = [c for c in obs["component"] if c["code"]["coding"][0]["code"] == "rr-confidence"]
        return found[0]["valueQuantity"]["value"] if found else None

    rated = by_start["2026-11-23T07:30:00-08:00"]
    assert rated["valueQuantity"]["value"] == 14.0 and "dataAbsentReason" not in rated
    assert [confidence(by_start[f"2026-11-23T07:30:{s:02d}-08:00"]) for s in (0, 5, 10, 15)] == [
        0.8,
        0.12,
        0.0,
        None,
    ]


def test_omh_export_leaves_out_readings_without_a_rate(mixed: Api) -> None:
    points = export(mixed, "omh").json
    assert [data_point_errors(p) for p in points] == [[] for _ in points]
    rates = [p["body"]["respiratory_rate"]["value"] for p in points]
    assert rates == [14.0, 15.0]  # the two readings without a rate have no OMH form


# ---- the dashboard ------------------------------------------------------------------------------------


@pytest.fixture
def alice_web(app: Flask, alice: Api) -> FlaskClient:
    set_password(app, alice.user_id)
    client = app.test_client()
    assert login(client, "alice").status_code == 302
    return client


def test_the_dashboard_says_not_enough_breathing_heard_and_what_was_left_out(
    alice_web: FlaskClient, alice: Api
) -> None:
    body = workout(
        "23",
        {1: [reading(0, 14.0, 0.9), reading(5, 30.0, 0.1), noisy(10)], 2: [noisy(0), noisy(5, 0.2)]},
    )
    assert alice.put(workout_url(W), json=body).status_code == 201
    page = alice_web.get(f"/workouts/{W}").get_data(as_text=True)
    summaries = elements(page, tag="p", cls="summary")
    assert [
        (p.attrs["data-confident"], p.attrs["data-low-confidence"], p.attrs["data-no-rate"])
        for p in summaries
    ] == [
        ("1", "1", "1"),
        ("0", "0", "2"),
    ]
    stage_2 = page.split('data-chart="stage-2"', 1)[1].split('class="summary"', 1)[1].split("</p>")[0]
    assert "Not enough breathing heard" in stage_2 and "Median RR" not in stage_2
    assert "2 with no rate (too noisy to tell)" in stage_2
    drawn = elements(page, tag="g", cls="segment")
    assert [g.attrs["class"].split()[2:] for g in drawn] == [
        [],
        ["left-out", "low-confidence"],
        ["left-out", "no-rate"],
        ["left-out", "no-rate"],
        ["left-out", "no-rate"],
    ]
    assert [g.attrs["data-reason"] for g in drawn] == ["", "", "too_noisy", "too_noisy", "too_noisy"]
    listing = alice_web.get("/workouts").get_data(as_text=True)
    (row,) = [e for e in elements(listing, tag="tr") if e.attrs.get("data-workout-id") == str(W)]
    assert (row.attrs["data-rr1"], row.attrs["data-rr2"]) == ("14.0", "")
    assert (row.attrs["data-not-heard1"], row.attrs["data-not-heard2"]) == ("False", "True")
    assert listing.count(">not heard</span>") == 1  # stage 2; stages 3 and 4 were not recorded
    trends = alice_web.get("/trends").get_data(as_text=True)
    table = trends.split('class="numbers left-out"')[1].split("</table>")[0]
    cells = '<td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>'
    assert '<th scope="row">2 (during)</th>' + cells.format(2, 0, 1) in table
    assert '<th scope="row">1 (before)</th>' + cells.format(1, 1, 0) in table
