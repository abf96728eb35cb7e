"""Trend numbers against a hand computation on a small, fully worked data set (on both databases).

Quartile rule: linear interpolation between order statistics, position (n - 1) * p (Hyndman-Fan type 7).
Whiskers: most extreme points within 1.5 IQR of the box.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
from api_helpers import Api, workout_url

from backend.trends import box_stats

W1, W2, W3, W4 = (uuid.UUID(int=i) for i in (1, 2, 3, 4))


def seg(start_s: float, rr_bpm: float, breath_class: str | None = None) -> dict[str, Any]:
    return {"start_s": start_s, "duration_s": 6.0, "rr_bpm": rr_bpm, "breath_class": breath_class}


def stage(n: int, started_at: str, rr_and_classes: list[tuple[float, str | None]]) -> dict[str, Any]:
    return {
        "stage": n,
        "started_at": started_at,
        "segments": [seg(6.0 * i, rr, cls) for i, (rr, cls) in enumerate(rr_and_classes)],
    }


def workout(started_at: str, activity: str, stages: list, pulse: dict[str, float]) -> dict[str, Any]:
    return {
        "started_at": started_at,
        "activity": activity,
        "environment": "outdoor",
        "model_version": "m1",
        "stages": stages,
        "pulse": [{"point": p, "bpm": bpm} for p, bpm in pulse.items()],
    }


DATA = {
    # Monday 16 Nov (ISO week 47). Stage medians: 13, (32+34)/2 = 33, 27, 20. Heavy 4 of 10 classified.
    W1: workout(
        "2026-11-16T07:00:00-08:00",
        "running",
        [
            stage(1, "2026-11-16T07:00:00-08:00", [(12, "normal"), (14, "normal"), (13, "none")]),
            stage(
                2, "2026-11-16T07:20:00-08:00", [(30, "heavy"), (34, "heavy"), (32, "normal"), (36, "heavy")]
            ),
            stage(3, "2026-11-16T07:22:00-08:00", [(28, "heavy"), (26, "normal")]),
            stage(4, "2026-11-16T07:30:00-08:00", [(20, "normal")]),
        ],
        {"before_1": 60, "before_2": 150, "before_3": 160, "after_3": 150, "before_4": 120, "after_4": 100},
    ),
    # Wednesday 18 Nov, another offset. Medians 15.5, 40, 33, 23. Heavy 2 of 6 classified (2 unclassified).
    W2: workout(
        "2026-11-18T18:30:00+01:00",
        "biking",
        [
            stage(1, "2026-11-18T18:30:00+01:00", [(16, "none"), (15, None)]),
            stage(2, "2026-11-18T18:50:00+01:00", [(40, "heavy")]),
            stage(3, "2026-11-18T18:52:00+01:00", [(35, "normal"), (30, "normal"), (33, "heavy")]),
            stage(4, "2026-11-18T19:00:00+01:00", [(22, "normal"), (24, None)]),
        ],
        {"before_1": 70, "after_3": 170, "after_4": 110},
    ),
    # Sunday 22 Nov 23:30 local = Monday 23 Nov UTC: still week 47 on the user's clock. Medians 10, -, 27, -.
    W3: workout(
        "2026-11-22T23:30:00-08:00",
        "running",
        [
            stage(1, "2026-11-22T23:30:00-08:00", [(10, "normal")]),
            stage(3, "2026-11-22T23:52:00-08:00", [(25, "heavy"), (29, "heavy")]),
        ],
        {"before_1": 55, "before_3": 140, "after_3": 130},
    ),
    # Tuesday 24 Nov (week 48). Medians 14 (of 11 12 14 18 20), 31, -, 19. Heavy 1 of 1 classified.
    W4: workout(
        "2026-11-24T06:00:00+00:00",
        "running",
        [
            stage(
                1, "2026-11-24T06:00:00+00:00", [(18, None), (11, None), (14, None), (20, None), (12, None)]
            ),
            stage(2, "2026-11-24T06:20:00+00:00", [(31, "heavy")]),
            stage(4, "2026-11-24T06:30:00+00:00", [(19, None)]),
        ],
        {"before_1": 64, "before_2": 155, "after_4": 105},
    ),
}


@pytest.fixture
def seeded(alice: Api, bob: Api) -> Api:
    for workout_id, body in DATA.items():
        assert alice.put(workout_url(workout_id), json=body).status_code == 201
    # Someone else's extreme workout in the same weeks must not move any number.
    noise = workout(
        "2026-11-17T07:00:00-08:00",
        "running",
        [stage(n, "2026-11-17T07:00:00-08:00", [(79, "heavy")]) for n in (1, 2, 3, 4)],
        {p: 249 for p in ("before_1", "before_2", "before_3", "after_3", "before_4", "after_4")},
    )
    assert bob.put(workout_url(uuid.uuid4()), json=noise).status_code == 201
    return alice


def box(median: float, q1: float, q3: float, low: float, high: float, points: list, ids: list) -> dict:
    return {
        "median": median,
        "q1": q1,
        "q3": q3,
        "whisker_low": low,
        "whisker_high": high,
        "n": len(points),
        "points": points,
        "workout_ids": [str(i) for i in ids],
    }


# Hand computation, points in order of start time (W1, W2, W3, W4).
EXPECTED_STAGES = {
    # RR 13, 15.5, 10, 14 -> sorted 10 13 14 15.5: q1 = 10 + .75*3, median 13.5, q3 = 14 + .25*1.5
    1: (
        box(13.5, 12.25, 14.375, 10, 15.5, [13, 15.5, 10, 14], [W1, W2, W3, W4]),
        # pulse before_1: 60 70 55 64 -> 55 60 64 70
        box(62, 58.75, 65.5, 55, 70, [60, 70, 55, 64], [W1, W2, W3, W4]),
    ),
    # RR 33 40 31 -> 31 33 40; pulse before_2 150 155
    2: (
        box(33, 32, 36.5, 31, 40, [33, 40, 31], [W1, W2, W4]),
        box(152.5, 151.25, 153.75, 150, 155, [150, 155], [W1, W4]),
    ),
    # RR 27 33 27; pulse mean(before_3, after_3): 155, 170 (after_3 only), 135
    3: (
        box(27, 27, 30, 27, 33, [27, 33, 27], [W1, W2, W3]),
        box(155, 145, 162.5, 135, 170, [155, 170, 135], [W1, W2, W3]),
    ),
    # RR 20 23 19; pulse mean(before_4, after_4): 110, 110 (after_4 only), 105
    4: (
        box(20, 19.5, 21.5, 19, 23, [20, 23, 19], [W1, W2, W4]),
        box(110, 107.5, 110, 105, 110, [110, 110, 105], [W1, W2, W4]),
    ),
}


def test_stage_distributions_match_the_hand_computation(seeded: Api) -> None:
    response = seeded.get("/api/v1/trends/stages")
    assert response.status_code == 200
    stages = response.json["stages"]
    assert [s["stage"] for s in stages] == [1, 2, 3, 4]
    for s in stages:
        rr, pulse = EXPECTED_STAGES[s["stage"]]
        for got, want in ((s["rr"], rr), (s["pulse"], pulse)):
            assert got["workout_ids"] == want["workout_ids"], s["stage"]
            assert got["points"] == pytest.approx(want["points"]), s["stage"]
            numbers = ("median", "q1", "q3", "whisker_low", "whisker_high", "n")
            assert {k: got[k] for k in numbers} == pytest.approx({k: want[k] for k in numbers}), s["stage"]


def test_stage_trends_filter_by_activity_and_local_day(seeded: Api) -> None:
    biking = seeded.get("/api/v1/trends/stages?activity=biking").json["stages"]
    assert biking[0]["rr"]["points"] == [15.5] and biking[0]["rr"]["median"] == 15.5
    # From Monday 23 Nov on the user's clock: W3 (Sunday 22nd locally, though the 23rd in UTC) is out.
    later = seeded.get("/api/v1/trends/stages?from=2026-11-23").json["stages"]
    assert later[0]["rr"]["workout_ids"] == [str(W4)]
    assert later[2]["rr"]["n"] == 0 and later[2]["rr"]["median"] is None


def test_rr_vs_pulse_pairs_and_correlation(seeded: Api) -> None:
    stages = seeded.get("/api/v1/trends/rr-vs-pulse").json["stages"]
    expected_pairs = {
        1: [(W1, 13, 60), (W2, 15.5, 70), (W3, 10, 55), (W4, 14, 64)],
        2: [(W1, 33, 150), (W4, 31, 155)],
        3: [(W1, 27, 155), (W2, 33, 170), (W3, 27, 135)],
        4: [(W1, 20, 110), (W2, 23, 110), (W4, 19, 105)],
    }
    for s in stages:
        pairs = expected_pairs[s["stage"]]
        assert [(p["workout_id"], p["rr_bpm"], p["pulse_bpm"]) for p in s["pairs"]] == [
            (str(w), pytest.approx(rr), pytest.approx(bpm)) for w, rr, bpm in pairs
        ]
        assert s["n"] == len(pairs)
        rr, bpm = np.array([p[1] for p in pairs], float), np.array([p[2] for p in pairs], float)
        assert s["pearson_r"] == pytest.approx(np.corrcoef(rr, bpm)[0, 1])
    assert stages[1]["pearson_r"] == pytest.approx(-1.0)  # two points: a perfect (negative) line
    assert stages[0]["pairs"][1]["started_at"] == "2026-11-18T18:30:00+01:00"  # on the workout's clock


def test_weekly_fitness_matches_the_hand_computation(seeded: Api) -> None:
    weeks = seeded.get("/api/v1/trends/weekly").json["weeks"]
    assert weeks == [
        {
            "week": "2026-W47",
            "week_start": "2026-11-16",
            "workouts": 3,
            "resting_rr_bpm": pytest.approx((13 + 15.5 + 10) / 3),
            "peak_rr_bpm": pytest.approx((33 + 40 + 27) / 3),  # max(stage 2, stage 3); W3 has only stage 3
            "rr_recovery_bpm": pytest.approx(((27 - 20) + (33 - 23)) / 2),  # W3 has no stage 4
            "hr_recovery_bpm": pytest.approx(((150 - 100) + (170 - 110)) / 2),  # W3 has no after_4
            "heavy_share": pytest.approx((4 + 2 + 2) / (10 + 6 + 3)),
        }
        | NO_MARKERS
        | NOTHING_LEFT_OUT,
        {
            "week": "2026-W48",
            "week_start": "2026-11-23",
            "workouts": 1,
            "resting_rr_bpm": pytest.approx(14),
            "peak_rr_bpm": pytest.approx(31),
            "rr_recovery_bpm": None,
            "hr_recovery_bpm": None,
            "heavy_share": pytest.approx(1.0),
        }
        | NO_MARKERS
        | NOTHING_LEFT_OUT,
    ]


NO_MARKERS = dict.fromkeys(("resting_hr_bpm", "hrv_sdnn_ms", "vo2_max_ml_kg_min", "walking_hr_bpm"))
# Readings sent without a confidence (as before issue 19) all count: nothing is left out.
NOTHING_LEFT_OUT = {
    "rr_left_out": [
        {"stage": n, "readings_without_rate": 0, "readings_low_confidence": 0, "not_enough_heard": 0}
        for n in (1, 2, 3, 4)
    ]
}


def marker_sync(metric: str, units: str, points: list[tuple[str, float]]) -> dict[str, Any]:
    data = [{"date": f"{day} 07:00:00 +0100", "qty": value} for day, value in points]
    return {"data": {"metrics": [{"name": metric, "units": units, "data": data}]}}


def test_weekly_fitness_has_the_markers_beside_rr(seeded: Api) -> None:
    """Weekly means of each marker on its local day; a week with markers but no workout is a week too."""
    for body in (
        marker_sync(
            "resting_heart_rate", "bpm", [("2026-11-09", 53), ("2026-11-16", 56), ("2026-11-18", 54)]
        ),
        marker_sync("heart_rate_variability", "ms", [("2026-11-17", 40.0), ("2026-11-22", 50.0)]),
        marker_sync("vo2_max", "ml/(kg·min)", [("2026-11-24", 44.5)]),
        marker_sync("walking_heart_rate_average", "bpm", [("2026-11-23", 99)]),
    ):
        assert seeded.post("/api/v1/imports/health-auto-export", json=body).status_code == 201
    weeks = {w["week"]: w for w in seeded.get("/api/v1/trends/weekly").json["weeks"]}
    assert list(weeks) == ["2026-W46", "2026-W47", "2026-W48"]
    markers = {week: {k: w[k] for k in NO_MARKERS} for week, w in weeks.items()}
    assert markers == {
        "2026-W46": {
            "resting_hr_bpm": 53,
            "hrv_sdnn_ms": None,
            "vo2_max_ml_kg_min": None,
            "walking_hr_bpm": None,
        },
        "2026-W47": {
            "resting_hr_bpm": pytest.approx(55),
            "hrv_sdnn_ms": pytest.approx(45),  # Sunday the 22nd is still W47
            "vo2_max_ml_kg_min": None,
            "walking_hr_bpm": None,
        },
        "2026-W48": {
            "resting_hr_bpm": None,
            "hrv_sdnn_ms": None,
            "vo2_max_ml_kg_min": 44.5,
            "walking_hr_bpm": 99,
        },
    }
    assert weeks["2026-W46"]["workouts"] == 0 and weeks["2026-W46"]["resting_rr_bpm"] is None
    assert weeks["2026-W47"]["resting_rr_bpm"] == pytest.approx((13 + 15.5 + 10) / 3)  # unchanged
    # Date filters apply to markers (their local day); the activity filter does not.
    until = seeded.get("/api/v1/trends/weekly?from=2026-11-16&to=2026-11-17").json["weeks"]
    assert [(w["week"], w["resting_hr_bpm"], w["hrv_sdnn_ms"]) for w in until] == [
        ("2026-W47", 56, 40.0)
    ]  # not the 9th, not the 18th


def test_trends_of_a_user_without_workouts_are_empty(alice: Api) -> None:
    stages = alice.get("/api/v1/trends/stages").json["stages"]
    assert all(s["rr"]["n"] == 0 and s["rr"]["points"] == [] and s["pulse"]["median"] is None for s in stages)
    assert alice.get("/api/v1/trends/weekly").json == {"weeks": []}
    assert all(s["pearson_r"] is None for s in alice.get("/api/v1/trends/rr-vs-pulse").json["stages"])


# ---- the quartile rule itself (no database) -----------------------------------------------------------


@pytest.mark.parametrize(
    "values", [[3.0, 1.0, 2.0], [10, 13, 14, 15.5], list(range(11)), [5.5, 5.5, 7.25, 1, 9, 2]]
)
def test_quartiles_are_type_7_like_numpy_linear(values: list[float]) -> None:
    stats = box_stats(values)
    q1, median, q3 = np.percentile(values, [25, 50, 75], method="linear")
    assert (stats["q1"], stats["median"], stats["q3"]) == pytest.approx((q1, median, q3))


def test_whiskers_stop_at_the_last_point_within_1_5_iqr() -> None:
    stats = box_stats([1, 2, 3, 4, 100])  # q1 2, q3 4, IQR 2: fences at -1 and 7
    assert (stats["whisker_low"], stats["whisker_high"]) == (1, 4)
    assert box_stats([-50, 10, 11, 12, 13])["whisker_low"] == 10


def test_one_point_and_no_points() -> None:
    assert box_stats([7.0]) == {
        "median": 7.0,
        "q1": 7.0,
        "q3": 7.0,
        "whisker_low": 7.0,
        "whisker_high": 7.0,
        "n": 1,
    }
    assert box_stats([])["median"] is None and box_stats([])["n"] == 0
