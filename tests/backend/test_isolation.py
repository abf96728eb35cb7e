"""A user never sees or changes another user's data: another user's workout id answers 404."""

from __future__ import annotations

import uuid

from api_helpers import Api, sample_workout, workout_url


def test_another_users_workout_is_404_for_every_operation(alice: Api, bob: Api) -> None:
    url = workout_url(uuid.uuid4())
    assert alice.put(url, json=sample_workout()).status_code == 201
    before = alice.get(url).json

    for response in (
        bob.get(url),
        bob.delete(url),
        bob.post(
            f"{url}/stages/1/segments", json={"segments": [{"start_s": 30, "duration_s": 6, "rr_bpm": 20}]}
        ),
        bob.post(f"{url}/pulse", json={"pulse": [{"point": "after_4", "bpm": 100}]}),
        bob.post(
            f"{url}/pulse",
            json={"pulse": [{"point": "after_4", "bpm": 100}]},
            headers={"Idempotency-Key": "k"},
        ),
    ):
        assert response.status_code == 404
        assert response.content_type == "application/problem+json"
    assert alice.get(url).json == before


def test_a_put_to_another_users_id_makes_a_separate_workout(alice: Api, bob: Api) -> None:
    """Ids are per user, so a PUT cannot touch (or reveal) someone else's workout with the same id."""
    url = workout_url(uuid.uuid4())
    alice.put(url, json=sample_workout())
    before = alice.get(url).json
    assert bob.put(url, json=sample_workout(activity="biking", stages=[], pulse=[])).status_code == 201
    assert alice.get(url).json == before
    assert bob.get(url).json["activity"] == "biking"
    assert bob.delete(url).status_code == 204
    assert alice.get(url).json == before


def test_lists_and_trends_only_cover_the_callers_workouts(alice: Api, bob: Api) -> None:
    alice_id = uuid.uuid4()
    alice.put(workout_url(alice_id), json=sample_workout())
    bob.put(workout_url(uuid.uuid4()), json=sample_workout(started_at="2026-11-22T07:30:00-08:00"))

    listed = alice.get("/api/v1/workouts").json["workouts"]
    assert [w["id"] for w in listed] == [str(alice_id)]
    stage_one = alice.get("/api/v1/trends/stages").json["stages"][0]
    assert stage_one["rr"]["workout_ids"] == [str(alice_id)]
    assert stage_one["pulse"]["workout_ids"] == [str(alice_id)]
    assert [w["workouts"] for w in alice.get("/api/v1/trends/weekly").json["weeks"]] == [1]
    pairs = alice.get("/api/v1/trends/rr-vs-pulse").json["stages"][0]["pairs"]
    assert [p["workout_id"] for p in pairs] == [str(alice_id)]
