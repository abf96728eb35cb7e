"""Every class of bad input gets a 4xx problem+json naming the field, and changes nothing stored."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from api_helpers import Api, sample_workout, workout_url

PROBLEM = "application/problem+json"


def edit(fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = sample_workout()
    fn(body)
    return body


def set_in(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        target = body
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return apply


BAD_WORKOUTS = {
    # wrong types
    "rr as string": (("stages", 0, "segments", 0, "rr_bpm"), "14.2", "stages[0].segments[0].rr_bpm"),
    "bpm as bool": (("pulse", 0, "bpm"), True, "pulse[0].bpm"),
    "stages not a list": (("stages",), {"stage": 1}, "stages"),
    "activity unknown": (("activity",), "swimming", "activity"),
    "environment unknown": (("environment",), "space", "environment"),
    "breath class unknown": (
        ("stages", 0, "segments", 0, "breath_class"),
        "wheezy",
        "stages[0].segments[0].breath_class",
    ),
    "pulse point unknown": (("pulse", 0, "point"), "during_2", "pulse[0].point"),
    "probs not three": (
        ("stages", 0, "segments", 0, "breath_probs"),
        [0.5, 0.5],
        "stages[0].segments[0].breath_probs",
    ),
    "probs do not sum to one": (
        ("stages", 0, "segments", 0, "breath_probs"),
        [0.5, 0.5, 0.5],
        "stages[0].segments[0].breath_probs",
    ),
    "noise prob above one": (
        ("stages", 0, "segments", 0, "noise_prob"),
        1.5,
        "stages[0].segments[0].noise_prob",
    ),
    "empty model version": (("model_version",), "", "model_version"),
    # unknown fields, at any depth
    "unknown top-level field": (("heart_rate",), 70, "heart_rate"),
    "unknown segment field": (
        ("stages", 0, "segments", 0, "confidence"),
        0.9,
        "stages[0].segments[0].confidence",
    ),
    # ranges
    "rr above 80": (("stages", 0, "segments", 0, "rr_bpm"), 80.5, "stages[0].segments[0].rr_bpm"),
    "rr below 0": (("stages", 0, "segments", 0, "rr_bpm"), -1, "stages[0].segments[0].rr_bpm"),
    "pulse above 250": (("pulse", 1, "bpm"), 251, "pulse[1].bpm"),
    "pulse below 25": (("pulse", 0, "bpm"), 24.9, "pulse[0].bpm"),
    "stage 0": (("stages", 0, "stage"), 0, "stages[0].stage"),
    "stage 5": (("stages", 1, "stage"), 5, "stages[1].stage"),
    # naive timestamps
    "naive started_at": (("started_at",), "2026-11-21T07:30:00", "started_at"),
    "naive stage start": (("stages", 1, "started_at"), "2026-11-21T07:52:00", "stages[1].started_at"),
    "naive measured_at": (("pulse", 2, "measured_at"), "2026-11-21T07:53:05", "pulse[2].measured_at"),
    # segment times outside the stage (60 s long)
    "segment starts before the stage": (
        ("stages", 0, "segments", 0, "start_s"),
        -0.5,
        "stages[0].segments[0].start_s",
    ),
    "segment starts after the stage": (
        ("stages", 0, "segments", 1, "start_s"),
        60.0,
        "stages[0].segments[1].start_s",
    ),
    "segment ends after the stage": (
        ("stages", 1, "segments", 0, "duration_s"),
        6.5,
        "stages[1].segments[0].duration_s",
    ),
    "segment outside a short stage": (("stages", 0, "duration_s"), 10.0, "stages[0].segments[1].duration_s"),
    # duplicates
    "stage twice": (("stages", 1, "stage"), 1, "stages[1].stage"),
    "pulse point twice": (("pulse", 1, "point"), "before_1", "pulse[1].point"),
    "segment start twice": (("stages", 0, "segments", 1, "start_s"), 0.0, "stages[0].segments[1].start_s"),
}


@pytest.fixture
def stored(alice: Api) -> tuple[str, dict[str, Any]]:
    """A stored workout, and what GET answers for it, to show a failed request changed nothing."""
    url = workout_url(uuid.uuid4())
    assert alice.put(url, json=sample_workout()).status_code == 201
    return url, alice.get(url).json


def assert_problem(response: Any, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.json
    assert response.content_type == PROBLEM
    problem = response.json
    assert problem["status"] == status and problem["title"] and problem["type"]
    assert field in [e["field"] for e in problem["errors"]], problem
    if field != "(body)":
        assert field in problem["detail"]  # the one-line summary names it too
    return problem


@pytest.mark.parametrize("case", list(BAD_WORKOUTS), ids=list(BAD_WORKOUTS))
def test_bad_workout_is_rejected_naming_the_field(alice: Api, stored: tuple[str, dict], case: str) -> None:
    path, value, field = BAD_WORKOUTS[case]
    url, before = stored
    problem = assert_problem(alice.put(url, json=edit(set_in(path, value))), 422, field)
    error = next(e for e in problem["errors"] if e["field"] == field)
    assert error["in"] == "body" and error["pointer"].startswith("#/")
    assert alice.get(url).json == before


@pytest.mark.parametrize("missing", ["started_at", "activity", "environment", "model_version"])
def test_missing_required_field(alice: Api, stored: tuple[str, dict], missing: str) -> None:
    url, before = stored
    body = sample_workout()
    del body[missing]
    problem = assert_problem(alice.put(url, json=body), 422, missing)
    assert "required" in problem["errors"][0]["detail"].lower()
    assert alice.get(url).json == before


@pytest.mark.parametrize(
    "raw", [b'{"started_at": "2026-11-21T07:30:00-08:00",', b"", b"{'single': 1}", b"nul"]
)
def test_malformed_json_is_400_with_its_position(alice: Api, stored: tuple[str, dict], raw: bytes) -> None:
    url, before = stored
    response = alice.put(url, data=raw, headers={"Content-Type": "application/json"})
    problem = assert_problem(response, 400, "(body)")
    assert "line 1 column" in problem["detail"]
    assert alice.get(url).json == before


def test_body_must_be_an_object(alice: Api, stored: tuple[str, dict]) -> None:
    url, _ = stored
    assert_problem(alice.put(url, json=[sample_workout()]), 422, "(body)")


def test_non_json_content_type_is_415(alice: Api, stored: tuple[str, dict]) -> None:
    url, before = stored
    response = alice.put(url, data=json.dumps(sample_workout()), headers={"Content-Type": "text/plain"})
    assert response.status_code == 415 and response.content_type == PROBLEM
    assert alice.get(url).json == before


def test_body_over_the_configured_size_is_413(alice: Api, stored: tuple[str, dict]) -> None:
    url, before = stored
    limit = alice.app.config["MAX_CONTENT_LENGTH"]
    body = sample_workout(model_version="x" * limit)
    response = alice.put(url, json=body)
    assert response.status_code == 413 and response.content_type == PROBLEM
    assert str(limit) in response.json["detail"]
    assert alice.get(url).json == before


def test_size_limit_comes_from_configuration(database_url: str) -> None:
    from api_helpers import app_config, make_user

    from backend import create_app

    app = create_app(app_config(database_url, MAX_CONTENT_LENGTH=2000))
    _, token = make_user(app, "carol")
    small, large = json.dumps(sample_workout()), json.dumps(sample_workout(), indent=4)
    assert len(small) < 2000 < len(large)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    client = app.test_client()
    assert client.put(workout_url(uuid.uuid4()), data=small, headers=headers).status_code == 201
    response = client.put(workout_url(uuid.uuid4()), data=large, headers=headers)
    assert response.status_code == 413
    assert "2000 bytes" in response.json["detail"]


@pytest.mark.parametrize(("url_tail", "field"), [("not-a-uuid", "workout_id"), ("12345", "workout_id")])
def test_bad_workout_id_in_the_path(alice: Api, url_tail: str, field: str) -> None:
    problem = assert_problem(alice.put(f"/api/v1/workouts/{url_tail}", json=sample_workout()), 422, field)
    assert problem["errors"][0]["in"] == "path"


@pytest.mark.parametrize("stage", ["0", "5", "two"])
def test_stage_outside_1_to_4_in_the_path(alice: Api, stored: tuple[str, dict], stage: str) -> None:
    url, before = stored
    body = {
        "started_at": "2026-11-21T07:58:00-08:00",
        "segments": [{"start_s": 0, "duration_s": 6, "rr_bpm": 20}],
    }
    problem = assert_problem(alice.post(f"{url}/stages/{stage}/segments", json=body), 422, "stage")
    assert problem["errors"][0]["in"] == "path"
    assert alice.get(url).json == before


APPEND_CASES = {
    "naive new stage start": (
        4,
        {"started_at": "2026-11-21T07:58:00", "segments": [{"start_s": 0, "duration_s": 6, "rr_bpm": 20}]},
        "started_at",
    ),
    "segment past a stored stage": (
        2,
        {"segments": [{"start_s": 56.0, "duration_s": 6.0, "rr_bpm": 20}]},
        "segments[0].duration_s",
    ),
    "rr out of range": (
        1,
        {"segments": [{"start_s": 30, "duration_s": 6, "rr_bpm": 81}]},
        "segments[0].rr_bpm",
    ),
    "no segments": (1, {"segments": []}, "segments"),
    "unknown field": (1, {"segments": [{"start_s": 30, "duration_s": 6, "rr_bpm": 20}], "stage": 1}, "stage"),
    "start differs from stored stage": (
        1,
        {
            "started_at": "2026-11-21T07:31:00-08:00",
            "segments": [{"start_s": 30, "duration_s": 6, "rr_bpm": 20}],
        },
        "started_at",
    ),
}


@pytest.mark.parametrize("case", list(APPEND_CASES), ids=list(APPEND_CASES))
def test_bad_segment_append(alice: Api, stored: tuple[str, dict], case: str) -> None:
    stage, body, field = APPEND_CASES[case]
    url, before = stored
    assert_problem(alice.post(f"{url}/stages/{stage}/segments", json=body), 422, field)
    assert alice.get(url).json == before


@pytest.mark.parametrize(
    ("pulse", "field"),
    [
        ([{"point": "after_3", "bpm": 300}], "pulse[0].bpm"),
        ([{"point": "after_3", "bpm": 150, "measured_at": "2026-11-21T08:00:00"}], "pulse[0].measured_at"),
        ([{"point": "after_3", "bpm": 150}, {"point": "after_3", "bpm": 151}], "pulse[1].point"),
        ([{"point": "after_3", "bpm": "150"}], "pulse[0].bpm"),
    ],
)
def test_bad_pulse_append(alice: Api, stored: tuple[str, dict], pulse: list, field: str) -> None:
    url, before = stored
    assert_problem(alice.post(f"{url}/pulse", json={"pulse": pulse}), 422, field)
    assert alice.get(url).json == before


def test_a_failure_late_in_a_request_rolls_back_everything_before_it(
    alice: Api, stored: tuple[str, dict]
) -> None:
    """The first pulse point is new and would be inserted; the second conflicts, so neither is stored."""
    url, before = stored
    body = {"pulse": [{"point": "after_4", "bpm": 100}, {"point": "before_1", "bpm": 70}]}
    assert_problem(alice.post(f"{url}/pulse", json=body), 409, "pulse[1].point")
    assert alice.get(url).json == before


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("activity=swimming", "activity"),
        ("from=2026-11-21T07:00:00", "from"),
        ("to=yesterday", "to"),
        ("cursor=%%%", "cursor"),
        ("colour=red", "colour"),
    ],
)
def test_bad_query_parameters(alice: Api, query: str, field: str) -> None:
    problem = assert_problem(alice.get(f"/api/v1/workouts?{query}"), 422, field)
    assert problem["errors"][0]["in"] == "query"


def test_trend_filters_are_validated_too(alice: Api) -> None:
    for name in ("stages", "rr-vs-pulse", "weekly"):
        assert_problem(alice.get(f"/api/v1/trends/{name}?from=2026-11-21T07:00:00"), 422, "from")


def test_unknown_api_path_and_method_are_problems(alice: Api) -> None:
    missing = alice.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.content_type == PROBLEM
    wrong_method = alice.request("PATCH", workout_url(uuid.uuid4()), json={})
    assert wrong_method.status_code == 405 and wrong_method.content_type == PROBLEM
    assert "PUT" in wrong_method.headers["Allow"]


def test_problem_lists_every_error_not_just_the_first(alice: Api, stored: tuple[str, dict]) -> None:
    url, _ = stored
    body = copy.deepcopy(sample_workout())
    body["stages"][0]["segments"][0]["rr_bpm"] = 99
    body["pulse"][0]["bpm"] = 10
    body["extra"] = True
    problem = assert_problem(alice.put(url, json=body), 422, "stages[0].segments[0].rr_bpm")
    assert {e["field"] for e in problem["errors"]} == {
        "stages[0].segments[0].rr_bpm",
        "pulse[0].bpm",
        "extra",
    }
    assert "(and 2 more)" in problem["detail"]
