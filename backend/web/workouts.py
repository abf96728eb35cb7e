"""Workouts list (filtered, newest first, paged) and one workout's detail with its per-stage charts."""

from __future__ import annotations

import statistics
import uuid
from collections import Counter
from typing import Any

from flask import Blueprint, abort, render_template, request
from pydantic import ValidationError
from sqlalchemy import exists, select

from backend.db import get_session
from backend.models import Workout
from backend.problems import ProblemError
from backend.schemas import WorkoutListQuery
from backend.web.auth import current_web_user
from backend.web.charts import pulse_chart, stage_chart
from backend.web.forms import FilterForm
from backend.workouts import find_workout, list_workouts, workout_json

bp = Blueprint("workouts", __name__)
PAGE_SIZE = 25


def has_workouts(user_id: int) -> bool:
    """Whether the user has stored anything at all (decides between "upload one" and "none match")."""
    return bool(get_session().scalar(select(exists().where(Workout.user_id == user_id))))


@bp.get("/workouts")
def index() -> tuple[str, int]:
    user = current_web_user()
    form = FilterForm(request.args)
    context: dict[str, Any] = {"form": form, "page": None, "active": "workouts"}
    if not form.validate():
        return render_template("web/workouts.html", **context), 400
    cursor = request.args.get("cursor") or None
    try:
        query = WorkoutListQuery.model_validate({**form.query(), "limit": PAGE_SIZE, "cursor": cursor})
        context["page"] = list_workouts(get_session(), user.user_id, query)
    except (ValidationError, ProblemError):
        context["cursor_error"] = (
            "That page link is not valid any more; start again from the newest workouts."
        )
        return render_template("web/workouts.html", **context), 400
    context["has_workouts"] = bool(context["page"]["workouts"]) or has_workouts(user.user_id)
    context["first_page"] = cursor is None
    return render_template("web/workouts.html", **context), 200


def stage_summary(stage: dict[str, Any]) -> dict[str, Any]:
    """Median RR (the number the trends use for this stage), breath classes and mean noise of a stage."""
    segments = stage["segments"]
    noise = [s["noise_prob"] for s in segments if s["noise_prob"] is not None]
    return {
        "segments": len(segments),
        "median_rr_bpm": statistics.median(s["rr_bpm"] for s in segments) if segments else None,
        "classes": Counter(s["breath_class"] or "unclassified" for s in segments),
        "mean_noise_prob": statistics.fmean(noise) if noise else None,
    }


@bp.get("/workouts/<uuid:workout_id>")
def detail(workout_id: uuid.UUID) -> str:
    workout = find_workout(get_session(), current_web_user().user_id, workout_id, children=True)
    if workout is None:
        abort(404, description="There is no such workout among yours.")
    data = workout_json(workout)
    rr_max_bpm = max((seg["rr_bpm"] for s in data["stages"] for seg in s["segments"]), default=30.0)
    stages = [
        {"data": s, "chart": stage_chart(s, rr_max_bpm), "summary": stage_summary(s)} for s in data["stages"]
    ]
    return render_template(
        "web/workout.html",
        workout=data,
        stages=stages,
        pulse=pulse_chart(data["pulse"]),
        pulse_by_point={p["point"]: p for p in data["pulse"]},
        active="workouts",
    )
