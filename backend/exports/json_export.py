"""The JSON export: everything of one user, in the shape `POST /api/v1/imports/json` takes back.

Workouts appear exactly as `GET /api/v1/workouts/<id>` shows them (times on the workout's own clock),
without the server's bookkeeping (created_at, updated_at). Samples and health-app workouts follow, in
the order of their natural keys, so two exports of the same data are byte-for-byte equal but for
`exported_at` and `user`. Written as a stream of JSON fragments.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from backend.exports.common import iter_health_workouts, iter_markers, iter_samples, iter_workouts
from backend.models import User, Workout
from backend.workouts import workout_json

BOOKKEEPING = ("created_at", "updated_at")


def exported_workout(workout: Workout) -> dict[str, Any]:
    data = workout_json(workout)
    for key in BOOKKEEPING:
        data.pop(key, None)
    return data


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _array(items: Iterator[dict[str, Any]]) -> Iterator[str]:
    first = True
    for item in items:
        yield ("\n  " if first else ",\n  ") + json.dumps(item, ensure_ascii=False)
        first = False


def _samples(session: Session, user_id: int, since: datetime | None) -> Iterator[dict[str, Any]]:
    for sample, workout_uuid in iter_samples(session, user_id, since):
        yield {
            "kind": sample.kind,
            "started_at": _iso(sample.started_at),
            "ended_at": _iso(sample.ended_at),
            "bpm": sample.bpm,
            "bpm_min": sample.bpm_min,
            "bpm_max": sample.bpm_max,
            "source": sample.source,
            "workout_id": str(workout_uuid) if workout_uuid else None,
        }


def _health_workouts(session: Session, user_id: int, since: datetime | None) -> Iterator[dict[str, Any]]:
    for hw, workout_uuid in iter_health_workouts(session, user_id, since):
        yield {
            "source": hw.source,
            "activity_type": hw.activity_type,
            "started_at": _iso(hw.started_at),
            "ended_at": _iso(hw.ended_at),
            "indoor": hw.indoor,
            "hr_avg_bpm": hw.hr_avg_bpm,
            "hr_min_bpm": hw.hr_min_bpm,
            "hr_max_bpm": hw.hr_max_bpm,
            "workout_id": str(workout_uuid) if workout_uuid else None,
        }


def _markers(session: Session, user_id: int, since: datetime | None) -> Iterator[dict[str, Any]]:
    for marker in iter_markers(session, user_id, since):
        yield {
            "kind": marker.kind,
            "started_at": _iso(marker.started_at),
            "ended_at": _iso(marker.ended_at),
            "local_date": marker.local_date.isoformat(),
            "value": marker.value,
            "source": marker.source,
        }


def iter_json(session: Session, user_id: int, now: datetime, since: datetime | None = None) -> Iterator[str]:
    user = session.get(User, user_id)
    name = user.name if user is not None else ""
    head: dict[str, Any] = {
        "format": "respira-export",
        "version": 1,
        "exported_at": now.isoformat(),
        "user": {"name": name},
    }
    if since is not None:
        head["since"] = since.isoformat()
    yield json.dumps(head, ensure_ascii=False)[:-1] + ',\n "workouts": ['
    yield from _array(exported_workout(w) for w in iter_workouts(session, user_id, since=since))
    yield '\n ],\n "health_samples": ['
    yield from _array(_samples(session, user_id, since))
    yield '\n ],\n "health_workouts": ['
    yield from _array(_health_workouts(session, user_id, since))
    yield '\n ],\n "fitness_markers": ['
    yield from _array(_markers(session, user_id, since))
    yield "\n ]\n}\n"
