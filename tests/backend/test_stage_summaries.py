"""Stage summaries (issue 14) on random histories, on both databases.

A seeded random history goes through every write path the API has: create, replace, append segments
(new and stored stages), append pulse, delete, JSON restore and a Health Auto Export push that fills
pulse points. Then, for every workout:

- the stored summary rows equal a recomputation from the stored segments and pulse readings;
- they equal what migration 0005's backfill (SQL) computes from the same rows (downgrade, upgrade);
- a PUT's answer (built from the validated body) is exactly what a later GET reads back;
- every trends endpoint answers what the pre-summary computation (tests/backend/trends_reference.py,
  straight from the segments) answers, for several filters.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import trends_reference as reference
from alembic.script import ScriptDirectory
from api_helpers import Api, workout_url
from flask import Flask
from pydantic import TypeAdapter
from sqlalchemy import select

from backend import migrate, summaries
from backend.db import EXTENSION_KEY, Database
from backend.domain import RR_CONFIDENCE_MIN, NoRateReason, PulsePoint, values
from backend.models import StageSummary, Workout
from backend.schemas import WorkoutFilter
from backend.summaries import median
from backend.trends import json_datetime

SUMMARIES_REVISION = "0005"  # the migration that creates and backfills stage_summaries
POINTS = [p.value for p in PulsePoint]
REASONS = values(NoRateReason)
CLASSES = ["none", "normal", "heavy", None]
FIRST_DAY = datetime(2026, 10, 5, 7, 0)


def random_segment(rng: random.Random, start: float) -> dict[str, Any]:
    # RR values from a small set, so ties (and even counts with equal middles) are common. Issue 19: some
    # readings have no rate (a reason instead), confidences fall on both sides of the threshold (and on
    # it), and old-style readings send none.
    reading: dict[str, Any] = {
        "start_s": start,
        "duration_s": 3.0,
        "rr_bpm": rng.choice([8.0, 12.5, 14.0, 14.0, 20.25, 33.0, 41.5, 79.9, rng.uniform(0, 80)]),
        "breath_class": rng.choice(CLASSES),
    }
    kind = rng.choices(["old", "confidence", "no_rate"], weights=[5, 4, 1])[0]
    if kind == "confidence":
        reading["rr_confidence"] = rng.choice([0.0, 0.1, 0.29, RR_CONFIDENCE_MIN, 0.5, 1.0, rng.random()])
    elif kind == "no_rate":
        reading |= {"rr_bpm": None, "reason": rng.choice(REASONS), "rr_confidence": rng.choice([0.0, 0.2])}
    return reading


def random_segments(rng: random.Random, starts: list[float]) -> list[dict[str, Any]]:
    return [random_segment(rng, start) for start in starts]


def random_workout(rng: random.Random) -> dict[str, Any]:
    tz = timezone(timedelta(minutes=rng.choice([-480, -300, 0, 60, 330, 780])))
    start = (FIRST_DAY + timedelta(days=rng.randrange(0, 35), minutes=rng.randrange(0, 1440))).replace(
        tzinfo=tz
    )
    stages = []
    for n in sorted(rng.sample([1, 2, 3, 4], rng.randint(0, 4))):
        starts = rng.sample([3.0 * i for i in range(20)], rng.randint(0, 7))
        stages.append(
            {
                "stage": n,
                "started_at": (start + timedelta(minutes=8 * n)).isoformat(),
                "segments": random_segments(rng, starts),
            }
        )
    pulse = [
        {"point": p, "bpm": float(rng.randint(40, 200)) + rng.choice([0, 0.5])}
        for p in rng.sample(POINTS, rng.randint(0, 6))
    ]
    return {
        "started_at": start.isoformat(),
        "activity": rng.choice(["running", "biking"]),
        "environment": "outdoor",
        "model_version": "m1",
        "stages": stages,
        "pulse": pulse,
    }


def hae_sample(moment: datetime, bpm: int) -> dict[str, Any]:
    return {"date": moment.strftime("%Y-%m-%d %H:%M:%S %z"), "Min": bpm - 2, "Avg": bpm, "Max": bpm + 2}


def play_history(api: Api, rng: random.Random, steps: int) -> None:
    """Random writes through the API; `bodies` mirrors what each stored workout was last sent as."""
    bodies: dict[uuid.UUID, dict[str, Any]] = {}
    for _ in range(steps):
        op = rng.choices(
            ["create", "replace", "segments", "pulse", "delete", "restore", "push"],
            weights=[8, 2, 3, 2, 1, 1, 1],
        )[0]
        if op != "create" and op != "restore" and not bodies:
            op = "create"
        if op in ("create", "replace"):
            workout_id = uuid.uuid4() if op == "create" else rng.choice(list(bodies))
            body = random_workout(rng)
            response = api.put(workout_url(workout_id), json=body)
            assert response.status_code in (200, 201), response.json
            # The answer is built from the body, not re-read: it must be exactly what a GET reads back.
            assert response.json == api.get(workout_url(workout_id)).json
            bodies[workout_id] = body
        elif op == "segments":
            workout_id = rng.choice(list(bodies))
            stage = rng.randint(1, 4)
            stored = next((s for s in bodies[workout_id]["stages"] if s["stage"] == stage), None)
            taken = {seg["start_s"] for seg in stored["segments"]} if stored else set()
            free = [3.0 * i for i in range(20) if 3.0 * i not in taken]
            append: dict[str, Any] = {"segments": random_segments(rng, rng.sample(free, rng.randint(1, 4)))}
            if stored is None:
                append["started_at"] = bodies[workout_id]["started_at"]
            url = f"{workout_url(workout_id)}/stages/{stage}/segments"
            assert api.post(url, json=append).status_code == 201
            if stored is None:
                stored = {"stage": stage, "started_at": append["started_at"], "segments": []}
                bodies[workout_id]["stages"].append(stored)
            stored["segments"] += append["segments"]
        elif op == "pulse":
            workout_id = rng.choice(list(bodies))
            free = [p for p in POINTS if p not in {r["point"] for r in bodies[workout_id]["pulse"]}]
            if not free:
                continue
            readings = [{"point": p, "bpm": float(rng.randint(40, 200))} for p in rng.sample(free, 1)]
            assert api.post(f"{workout_url(workout_id)}/pulse", json={"pulse": readings}).status_code == 201
            bodies[workout_id]["pulse"] += readings
        elif op == "delete":
            workout_id = rng.choice(list(bodies))
            assert api.delete(workout_url(workout_id)).status_code == 204
            del bodies[workout_id]
        elif op == "restore":
            ids = [uuid.uuid4(), *rng.sample(list(bodies), min(len(bodies), 1))]
            restored = {workout_id: random_workout(rng) for workout_id in ids}
            document = {
                "format": "respira-export",
                "version": 1,
                "exported_at": "2026-11-28T00:00:00+00:00",
                "user": {"name": "someone"},
                "workouts": [{"id": str(w), **body} for w, body in restored.items()],
            }
            response = api.post("/api/v1/imports/json", json=document)
            assert response.status_code == 201, response.json
            bodies.update(restored)
        else:  # a Health Auto Export push with heart rate at the start of a workout's stages
            workout_id = rng.choice(list(bodies))
            moments = [datetime.fromisoformat(s["started_at"]) for s in bodies[workout_id]["stages"]]
            if not moments:
                continue
            jitter = [timedelta(seconds=rng.randint(-60, 60)) for _ in moments]
            data = [hae_sample(m + d, rng.randint(60, 180)) for m, d in zip(moments, jitter, strict=True)]
            push = {"data": {"metrics": [{"name": "heart_rate", "units": "bpm", "data": data}]}}
            response = api.post("/api/v1/imports/health-auto-export", json=push)
            assert response.status_code == 201, response.json
            bodies[workout_id]["pulse"] = api.get(workout_url(workout_id)).json["pulse"]


def stored_summaries(db: Database) -> dict[tuple[int, int], dict[str, Any]]:
    with db.session() as session:
        rows = session.execute(select(StageSummary.__table__)).mappings()
        return {(row["workout_id"], row["stage"]): dict(row) for row in rows}


@pytest.fixture
def history(app: Flask, alice: Api, bob: Api) -> Database:
    play_history(alice, random.Random(14), 80)
    play_history(bob, random.Random(41), 40)
    return app.extensions[EXTENSION_KEY]


def test_stored_summaries_equal_a_recomputation_from_segments(history: Database) -> None:
    stored = stored_summaries(history)
    recomputed: dict[tuple[int, int], dict[str, Any]] = {}
    with history.session() as session:
        workout_ids = list(session.scalars(select(Workout.id)))
        for workout_id in workout_ids:
            for row in summaries.stored_rows(session, workout_id):
                recomputed[(row["workout_id"], row["stage"])] = row
    assert len(workout_ids) > 40 and len(stored) > 140  # the history is not trivially small
    assert sum(r["rr_median_bpm"] is not None for r in stored.values()) > 70
    # the confidence rule had something to do: readings left out, and stages left without a median
    assert sum(r["no_rate_count"] for r in stored.values()) > 10
    assert sum(r["low_confidence_count"] for r in stored.values()) > 10
    assert any(r["segment_count"] and r["rr_median_bpm"] is None for r in stored.values())
    assert stored == recomputed


def recomputed_summaries(db: Database) -> dict[tuple[int, int], dict[str, Any]]:
    with db.session() as session:
        return {
            (row["workout_id"], row["stage"]): row
            for workout_id in session.scalars(select(Workout.id))
            for row in summaries.stored_rows(session, workout_id)
        }


def test_the_migration_backfills_the_same_summaries(history: Database) -> None:
    """Down before 0005 and up again: 0008's way down deletes the readings without a rate and drops the
    confidences (the old schema holds neither), 0005's SQL backfill then ranks what is left, and 0008
    keeps it: the same as the service's own computation over the surviving rows."""
    before = stored_summaries(history)
    previous = ScriptDirectory.from_config(migrate.alembic_config()).get_revision(SUMMARIES_REVISION)
    migrate.downgrade(history, previous.down_revision)
    migrate.upgrade(history)  # recreates the table and backfills it with SQL from the stored rows
    after = stored_summaries(history)
    assert after == recomputed_summaries(history)
    assert after.keys() == before.keys()
    assert all(row["no_rate_count"] == row["low_confidence_count"] == 0 for row in after.values())


FILTERS = [{}, {"activity": "biking"}, {"from": "2026-10-20"}, {"to": "2026-10-25", "activity": "running"}]


def query_string(filters: dict[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in filters.items())


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: query_string(f) or "all")
def test_trends_answer_what_the_computation_from_segments_answers(
    history: Database, alice: Api, bob: Api, filters: dict[str, str]
) -> None:
    query = query_string(filters)
    parsed = WorkoutFilter.model_validate(filters)  # the query string's alias, "from"
    sizes = []
    for api in (alice, bob):
        with history.session() as session:
            expected = {
                "stages": reference.stage_trends(session, api.user_id, parsed),
                "rr-vs-pulse": reference.rr_vs_pulse(session, api.user_id, parsed),
                "weekly": reference.weekly(session, api.user_id, parsed),
            }
        for endpoint, want in expected.items():
            got = api.get(f"/api/v1/trends/{endpoint}?{query}").json
            assert got == approx_json(want), endpoint
        sizes.append(sum(s["rr"]["n"] for s in expected["stages"]["stages"]))
    assert sizes[0] > 5  # alice's workouts are in every filtered view


def approx_json(value: Any) -> Any:
    """`value` with every float compared to 12 significant digits (sums may be added in another order)."""
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-12, abs=1e-12)
    if isinstance(value, dict):
        return {k: approx_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [approx_json(v) for v in value]
    return value


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), ([3.0], 3.0), ([4.0, 1.0], 2.5), ([5.0, 1.0, 3.0], 3.0), ([2.0, 2.0, 9.0, 1.0], 2.0)],
)
def test_median_is_the_middle_or_the_mean_of_the_two_middle_values(
    values: list[float], expected: float | None
) -> None:
    assert median(values) == expected


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=timezone(timedelta(hours=-8))),
        datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=timezone(timedelta(minutes=330))),
    ],
)
def test_trends_write_datetimes_as_pydantic_does_everywhere_else(moment: datetime) -> None:
    assert json_datetime(moment) == TypeAdapter(datetime).dump_python(moment, mode="json")
