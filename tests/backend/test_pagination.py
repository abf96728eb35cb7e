"""Listing: newest first, cursor pagination with stable pages (ties on start time included), filters."""

from __future__ import annotations

import uuid

from api_helpers import Api, sample_workout, workout_url

LIST = "/api/v1/workouts"


def put(api: Api, started_at: str, activity: str = "running") -> str:
    workout_id = str(uuid.uuid4())
    body = sample_workout(started_at=started_at, activity=activity, stages=[], pulse=[])
    assert api.put(workout_url(workout_id), json=body).status_code == 201
    return workout_id


def all_pages(api: Api, query: str) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        url = f"{LIST}?{query}" + (f"&cursor={cursor}" if cursor else "")
        response = api.get(url)
        assert response.status_code == 200, response.json
        pages.append([w["id"] for w in response.json["workouts"]])
        cursor = response.json["next_cursor"]
        if cursor is None:
            return pages


def test_pages_cover_every_workout_once_newest_first(alice: Api) -> None:
    days = [f"2026-11-0{d}T07:00:00-08:00" for d in range(1, 8)]
    ids = {put(alice, day): day for day in days}
    # Two more starting at the same instant (one written with another offset): ties broken by id.
    same_a = put(alice, "2026-11-04T12:00:00+00:00")
    same_b = put(alice, "2026-11-04T04:00:00-08:00")

    pages = all_pages(alice, "limit=3")
    assert [len(p) for p in pages] == [3, 3, 3]
    flat = [workout for page in pages for workout in page]
    assert len(flat) == len(set(flat)) == 9
    by_day = sorted(ids, key=ids.get, reverse=True)  # 11-07 ... 11-01, all at 15:00 UTC
    # The tie is at 12:00 UTC on the 4th, after 15:00 that day; the later-created one (higher id) comes first.
    assert flat == [*by_day[:4], same_b, same_a, *by_day[4:]]


def test_limit_defaults_and_last_page_has_no_cursor(alice: Api) -> None:
    put(alice, "2026-11-01T07:00:00-08:00")
    response = alice.get(LIST).json
    assert len(response["workouts"]) == 1 and response["next_cursor"] is None
    summary = response["workouts"][0]
    assert set(summary) >= {
        "id",
        "started_at",
        "activity",
        "environment",
        "model_version",
        "device",
        "stages",
    }
    assert summary["started_at"] == "2026-11-01T07:00:00-08:00"


def test_filters_by_local_day_instant_and_activity(alice: Api) -> None:
    early = put(alice, "2026-11-02T23:30:00-08:00")  # 2026-11-03 07:30 UTC, but the 2nd on the user's clock
    mid = put(alice, "2026-11-03T08:00:00-08:00", activity="biking")
    late = put(alice, "2026-11-05T08:00:00-08:00")

    def ids(query: str) -> set[str]:
        return {w for page in all_pages(alice, query) for w in page}

    assert ids("from=2026-11-03") == {mid, late}  # dates are the workout's local calendar days
    assert ids("to=2026-11-02") == {early}
    assert ids("from=2026-11-03T00:00:00Z") == {early, mid, late}  # instants compare instants
    assert ids("from=2026-11-03T00:00:00Z&to=2026-11-03T16:00:00Z") == {early}  # `to` instant is exclusive
    assert ids("activity=biking") == {mid}
    assert ids("activity=running&from=2026-11-03&limit=1") == {late}
