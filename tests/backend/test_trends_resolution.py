"""How the trends send their points (issue 14, read path): per workout or per ISO week, objects or
columns, and revalidation with ETag / If-None-Match; on both databases.

The week answers are checked against the documented aggregation (docs/api.md, "Resolution") computed
here from the full per-workout answer: the per-workout values grouped by the ISO week of the workout's
local date, the mean of each group (`statistics.fmean`), weeks oldest first. The statistics (box, n,
Pearson's r, what the confidence rule left out) must not depend on the resolution at all.
"""

from __future__ import annotations

import random
import statistics
import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from api_helpers import Api, workout_url

POINTS = ("before_1", "before_2", "before_3", "after_3", "before_4", "after_4")
STAGE_START_MIN = {1: 0, 2: 20, 3: 22, 4: 26}


def random_workout(rng: random.Random, started: datetime) -> dict[str, Any]:
    """A workout whose stages and pulse points are each sometimes missing, so the series differ."""
    stages = []
    for n in (1, 2, 3, 4):
        if rng.random() < 0.2:
            continue
        at = (started + timedelta(minutes=STAGE_START_MIN[n])).isoformat()
        segments = [
            {"start_s": 6.0 * i, "duration_s": 6.0, "rr_bpm": round(rng.uniform(8, 45), 2)}
            for i in range(rng.randint(1, 4))
        ]
        stages.append({"stage": n, "started_at": at, "segments": segments})
    pulse = [{"point": p, "bpm": rng.randint(50, 190)} for p in POINTS if rng.random() < 0.7]
    return {
        "started_at": started.isoformat(),
        "activity": rng.choice(("running", "biking")),
        "environment": "outdoor",
        "model_version": "m1",
        "stages": stages,
        "pulse": pulse,
    }


@pytest.fixture
def history(alice: Api, bob: Api) -> dict[str, date]:
    """Alice's 24 workouts over about six weeks, in three time zones (some late on a Sunday local time,
    already Monday in UTC); returns each workout's local date by id. Bob's workout must change nothing."""
    rng = random.Random(14)
    local_dates = {}
    for k in range(24):
        offset = timezone(timedelta(hours=rng.choice((-8, 0, 5))))
        started = datetime(2026, 9, 7, 6, 0, tzinfo=offset) + timedelta(
            days=int(k * 1.8), hours=rng.randint(0, 17)
        )
        workout_id = uuid.UUID(int=k + 1)
        assert alice.put(workout_url(workout_id), json=random_workout(rng, started)).status_code == 201
        local_dates[str(workout_id)] = started.date()
    assert (
        bob.put(workout_url(uuid.uuid4()), json=random_workout(rng, datetime.now(timezone.utc))).status_code
        == 201
    )
    return local_dates


def monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def weekly_means(days: list[date], *series: list[float]) -> tuple[list[str], list[int], list[list[float]]]:
    groups: dict[date, list[list[float]]] = defaultdict(lambda: [[] for _ in series])
    for day, *values in zip(days, *series, strict=True):
        for group, value in zip(groups[monday(day)], values, strict=True):
            group.append(value)
    weeks = sorted(groups)
    means = [[statistics.fmean(groups[w][k]) for w in weeks] for k in range(len(series))]
    return [w.isoformat() for w in weeks], [len(groups[w][0]) for w in weeks], means


BOX = ("median", "q1", "q3", "whisker_low", "whisker_high", "n")


def test_stage_points_per_week_are_the_weekly_means_of_the_per_workout_points(
    alice: Api, history: dict[str, date]
) -> None:
    full = alice.get("/api/v1/trends/stages?resolution=workout").json
    week = alice.get("/api/v1/trends/stages?resolution=week").json
    assert full["resolution"] == "workout" and week["resolution"] == "week"
    weeks_seen = set()
    for whole, down in zip(full["stages"], week["stages"], strict=True):
        assert down["rr_left_out"] == whole["rr_left_out"]
        for kind in ("rr", "pulse"):
            assert whole[kind]["n"] > 3  # every series has points to group
            assert {k: down[kind][k] for k in BOX} == {k: whole[kind][k] for k in BOX}
            days = [history[w] for w in whole[kind]["workout_ids"]]
            weeks, counts, (means,) = weekly_means(days, whole[kind]["points"])
            assert down[kind]["weeks"] == weeks
            assert down[kind]["counts"] == counts and sum(counts) == whole[kind]["n"]
            assert down[kind]["points"] == means
            assert down[kind]["workout_ids"] == []
            assert whole[kind]["weeks"] is None and whole[kind]["counts"] is None
            weeks_seen.update(weeks)
    assert len(weeks_seen) >= 6


def test_stage_one_per_week_is_the_weekly_resting_rr(alice: Api, history: dict[str, date]) -> None:
    """The same aggregation as /trends/weekly's resting_rr_bpm (mean of the stage-1 medians per week)."""
    stage_1 = alice.get("/api/v1/trends/stages?resolution=week").json["stages"][0]["rr"]
    weekly = {w["week_start"]: w for w in alice.get("/api/v1/trends/weekly").json["weeks"]}
    for start, mean in zip(stage_1["weeks"], stage_1["points"], strict=True):
        assert weekly[start]["resting_rr_bpm"] == pytest.approx(mean, rel=1e-12)


def test_auto_sends_workouts_up_to_max_points_then_weeks(alice: Api, history: dict[str, date]) -> None:
    n = len(history)
    full = alice.get("/api/v1/trends/stages?resolution=workout").json
    week = alice.get("/api/v1/trends/stages?resolution=week").json
    assert alice.get("/api/v1/trends/stages").json == full  # 24 workouts: under the default 200
    assert alice.get(f"/api/v1/trends/stages?max_points={n}").json == full
    assert alice.get(f"/api/v1/trends/stages?resolution=auto&max_points={n - 1}").json == week
    # the filters count: 24 workouts, but fewer than 20 from the second week on
    since = min(history.values()) + timedelta(days=14)
    later = sum(day >= since for day in history.values())
    auto = alice.get(
        f"/api/v1/trends/stages?resolution=auto&from={since.isoformat()}&max_points={later}"
    ).json
    assert auto["resolution"] == "workout" and later < n


def test_rr_vs_pulse_per_week_and_in_columns(alice: Api, history: dict[str, date]) -> None:
    full = alice.get("/api/v1/trends/rr-vs-pulse?resolution=workout").json
    week = alice.get("/api/v1/trends/rr-vs-pulse?resolution=week").json
    full_columns = alice.get("/api/v1/trends/rr-vs-pulse?resolution=workout&format=columns").json
    week_columns = alice.get("/api/v1/trends/rr-vs-pulse?resolution=week&format=columns").json
    assert alice.get("/api/v1/trends/rr-vs-pulse").json == full
    for s_full, s_week, c_full, c_week in zip(
        full["stages"], week["stages"], full_columns["stages"], week_columns["stages"], strict=True
    ):
        pairs = s_full["pairs"]
        assert len(pairs) == s_full["n"] > 2
        for other in (s_week, c_full, c_week):
            assert (other["n"], other["pearson_r"], other["pairs"]) == (s_full["n"], s_full["pearson_r"], [])
        # the local date is the start's own date, written with the workout's offset
        assert all(history[p["workout_id"]].isoformat() == p["started_at"][:10] for p in pairs)
        days = [history[p["workout_id"]] for p in pairs]
        weeks, counts, (rr, pulse) = weekly_means(
            days, [p["rr_bpm"] for p in pairs], [p["pulse_bpm"] for p in pairs]
        )
        assert s_week["weeks"] == [
            {"week_start": w, "n": c, "rr_bpm": r, "pulse_bpm": p}
            for w, c, r, p in zip(weeks, counts, rr, pulse, strict=True)
        ]
        assert c_week["columns"] == {"week_start": weeks, "n": counts, "rr_bpm": rr, "pulse_bpm": pulse}
        assert c_full["columns"] == {
            key: [p[key] for p in pairs] for key in ("workout_id", "started_at", "rr_bpm", "pulse_bpm")
        }
        assert s_full["weeks"] is s_full["columns"] is c_full["weeks"] is None


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/trends/stages?resolution=daily", "resolution"),
        ("/api/v1/trends/stages?max_points=0", "max_points"),
        ("/api/v1/trends/stages?max_points=many", "max_points"),
        ("/api/v1/trends/rr-vs-pulse?max_points=100001", "max_points"),
        ("/api/v1/trends/rr-vs-pulse?format=xml", "format"),
        ("/api/v1/trends/stages?format=columns", "format"),  # stages are columns already
        ("/api/v1/trends/weekly?resolution=week", "resolution"),  # weeks are weeks
    ],
)
def test_bad_parameters_are_refused_naming_them(alice: Api, path: str, field: str) -> None:
    response = alice.get(path)
    assert response.status_code == 422
    assert [e["field"] for e in response.json["errors"]] == [field]


@pytest.mark.parametrize(
    "path", ["/api/v1/trends/stages", "/api/v1/trends/rr-vs-pulse?format=columns", "/api/v1/trends/weekly"]
)
def test_etag_answers_304_until_the_data_changes(alice: Api, history: dict[str, date], path: str) -> None:
    first = alice.get(path)
    etag = first.headers["ETag"]
    assert (
        first.status_code == 200
        and etag.startswith('"')
        and first.headers["Cache-Control"] == "private, no-cache"
    )
    again = alice.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    assert alice.get(path, headers={"If-None-Match": '"something-else"'}).status_code == 200
    # the same data asked for differently is another answer
    other = alice.get(path + ("&" if "?" in path else "?") + "from=2026-09-20")
    assert other.status_code == 200 and other.headers["ETag"] != etag
    # a new workout changes every trend: the old tag no longer matches
    rng = random.Random(1)
    new = random_workout(rng, datetime(2026, 9, 9, 12, 0, tzinfo=timezone.utc))
    new["stages"] = [
        dict(s, segments=[dict(seg, rr_bpm=70.0) for seg in s["segments"]]) for s in new["stages"]
    ]
    new["pulse"] = [{"point": p, "bpm": 240} for p in POINTS]
    assert alice.put(workout_url(uuid.uuid4()), json=new).status_code == 201
    changed = alice.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert changed.json != first.json


def test_one_users_etag_does_not_answer_for_another(alice: Api, bob: Api, history: dict[str, date]) -> None:
    etag = alice.get("/api/v1/trends/stages").headers["ETag"]
    assert bob.get("/api/v1/trends/stages", headers={"If-None-Match": etag}).status_code == 200
