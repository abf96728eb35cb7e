"""Workouts list (filtered, sortable by its numbers, paged) and one workout's detail with its stage charts.

The list shows per workout the numbers the trends are made of: each stage's median RR, RR recovery (stage 3
minus stage 4) and the peak pulse reading (backend.trends.workout_numbers, computed in SQL)."""

from __future__ import annotations

import statistics
import uuid
from collections import Counter
from typing import Any

from flask import Blueprint, abort, render_template, request, url_for
from pydantic import ValidationError
from sqlalchemy import exists, select
from sqlalchemy.orm import selectinload

from backend import domain, summaries
from backend.db import get_session
from backend.models import Workout
from backend.problems import ProblemError
from backend.schemas import WorkoutFilter, WorkoutListQuery
from backend.trends import workout_numbers
from backend.web.auth import current_web_user
from backend.web.charts import pulse_chart, stage_chart
from backend.web.forms import FilterForm
from backend.workouts import find_workout, list_workouts, workout_conditions, workout_json, workout_summary

bp = Blueprint("workouts", __name__)
PAGE_SIZE = 25


def has_workouts(user_id: int) -> bool:
    """Whether the user has stored anything at all (decides between "upload one" and "none match")."""
    return bool(get_session().scalar(select(exists().where(Workout.user_id == user_id))))


# Columns the list sorts by: key -> (what it is, its column in backend.trends.workout_numbers).
SORTABLE = {
    "started": "start time",
    "rr1": "RR before exercise",
    "rr2": "RR during exercise",
    "rr3": "RR right after exercise",
    "rr4": "RR cooling down",
    "rr_recovery_bpm": "RR recovery",
    "peak_pulse_bpm": "peak pulse",
}
DEFAULT_SORT = "-started"  # newest first, paged by the API's cursor


def parse_sort(value: str | None) -> tuple[str, bool] | None:
    """`rr_recovery_bpm` (ascending) or `-rr_recovery_bpm` (descending) -> (key, descending)."""
    value = value or DEFAULT_SORT
    key, descending = value.removeprefix("-"), value.startswith("-")
    return (key, descending) if key in SORTABLE else None


def numbers_for(user_id: int, filters: WorkoutFilter, workout_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The per-workout numbers of these workouts, by id."""
    numbers = workout_numbers(user_id, filters)
    rows = get_session().execute(
        select(Workout.uuid, *_number_columns(numbers))
        .join(numbers, numbers.c.workout_id == Workout.id)
        .where(Workout.uuid.in_([uuid.UUID(w) for w in workout_ids]))
    )
    return {str(row[0]): _numbers(row) for row in rows}


NOT_HEARD = ("not_heard1", "not_heard2", "not_heard3", "not_heard4")  # 1: "not enough breathing heard"


def _number_columns(numbers: Any) -> list[Any]:
    return [numbers.c[k] for k in SORTABLE if k != "started"] + [numbers.c[k] for k in NOT_HEARD]


def _numbers(row: Any) -> dict[str, Any]:
    keys = [k for k in SORTABLE if k != "started"]
    values = row[-len(keys) - len(NOT_HEARD) : len(row) - len(NOT_HEARD)]
    numbers = {k: None if v is None else float(v) for k, v in zip(keys, values, strict=True)}
    flags = row[len(row) - len(NOT_HEARD) :]
    return numbers | {k: bool(v) for k, v in zip(NOT_HEARD, flags, strict=True)}


def sorted_page(
    user_id: int, filters: WorkoutFilter, key: str, descending: bool, page: int
) -> tuple[list[dict[str, Any]], bool]:
    """One page of the filtered workouts ordered by a number (workouts without it last), then newest."""
    numbers = workout_numbers(user_id, filters)
    column = Workout.started_at if key == "started" else numbers.c[key]
    order = (column.desc() if descending else column.asc()).nulls_last()
    rows = (
        get_session()
        .execute(
            select(Workout, *_number_columns(numbers))
            .join(numbers, numbers.c.workout_id == Workout.id)
            .where(*workout_conditions(user_id, filters))
            .options(selectinload(Workout.stages))
            .order_by(order, Workout.started_at.desc(), Workout.id.desc())
            .offset((page - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE + 1)
        )
        .all()
    )
    entries = [
        {**workout_summary(row[0]).model_dump(mode="json"), "numbers": _numbers(row)}
        for row in rows[:PAGE_SIZE]
    ]
    return entries, len(rows) > PAGE_SIZE


@bp.get("/workouts")
def index() -> tuple[str, int]:
    user = current_web_user()
    form = FilterForm(request.args)
    context: dict[str, Any] = {"form": form, "page": None, "active": "workouts"}
    if not form.validate():
        return render_template("web/workouts.html", **context), 400
    sort = parse_sort(request.args.get("sort"))
    page_number = request.args.get("page", "1")
    if sort is None or not page_number.isdigit() or int(page_number) < 1:
        context["cursor_error"] = (
            "That sort or page is not one this list offers; start again from the newest."
        )
        return render_template("web/workouts.html", **context), 400
    key, descending = sort
    context |= {"sort_key": key, "sort_descending": descending, "sortable": SORTABLE}
    filters = form.to_filter()
    if (key, descending) == parse_sort(DEFAULT_SORT):
        cursor = request.args.get("cursor") or None
        try:
            query = WorkoutListQuery.model_validate({**form.query(), "limit": PAGE_SIZE, "cursor": cursor})
            listed = list_workouts(get_session(), user.user_id, query)
        except (ValidationError, ProblemError):
            context["cursor_error"] = (
                "That page link is not valid any more; start again from the newest workouts."
            )
            return render_template("web/workouts.html", **context), 400
        numbers = numbers_for(user.user_id, filters, [w["id"] for w in listed["workouts"]])
        workouts = [{**w, "numbers": numbers.get(w["id"], {})} for w in listed["workouts"]]
        context["page"] = {"workouts": workouts}
        more = {"cursor": listed["next_cursor"]} if listed["next_cursor"] else None
        context["pager"] = _pager(
            form, {} if cursor is not None else None, more, "Newest workouts", "Older workouts"
        )
    else:
        number = int(page_number)
        workouts, has_more = sorted_page(user.user_id, filters, key, descending, number)
        sort_arg = {"sort": ("-" if descending else "") + key}
        context["page"] = {"workouts": workouts}
        context["pager"] = _pager(
            form,
            sort_arg if number > 1 else None,
            {**sort_arg, "page": str(number + 1)} if has_more else None,
            "First page",
            "Next page",
        )
    context["has_workouts"] = bool(context["page"]["workouts"]) or has_workouts(user.user_id)
    return render_template("web/workouts.html", **context), 200


def _pager(
    form: FilterForm,
    first: dict[str, str] | None,
    after: dict[str, str] | None,
    first_text: str,
    after_text: str,
) -> list[tuple[str, str]]:
    """Links (text, url) to the first page and the next one, keeping the filters; None: no such link."""
    links = []
    for text, page in ((first_text, first), (after_text, after)):
        if page is not None:
            arguments: dict[str, Any] = {**page, **form.query()}  # (url_for's own flags are not str)
            links.append((text, url_for("web.workouts.index", **arguments)))
    return links


def stage_summary(stage: dict[str, Any]) -> dict[str, Any]:
    """Median RR (the number the trends use for this stage, by the same confidence rule: backend.summaries),
    what that rule left out, breath classes and mean noise of a stage."""
    segments = stage["segments"]
    noise = [s["noise_prob"] for s in segments if s["noise_prob"] is not None]
    rr = summaries.stage_rr(
        [summaries.Reading(s["rr_bpm"], s["rr_confidence"], s["breath_class"]) for s in segments]
    )
    return {
        "segments": len(segments),
        "median_rr_bpm": rr["rr_median_bpm"],
        "confident": len(segments) - rr["no_rate_count"] - rr["low_confidence_count"],
        "low_confidence": rr["low_confidence_count"],
        "no_rate": Counter(s["reason"] for s in segments if s["rr_bpm"] is None),
        "not_enough_heard": bool(segments) and rr["rr_median_bpm"] is None,
        "classes": Counter(s["breath_class"] or "unclassified" for s in segments),
        "mean_noise_prob": statistics.fmean(noise) if noise else None,
    }


@bp.get("/workouts/<uuid:workout_id>")
def detail(workout_id: uuid.UUID) -> str:
    workout = find_workout(get_session(), current_web_user().user_id, workout_id, children=True)
    if workout is None:
        abort(404, description="There is no such workout among yours.")
    data = workout_json(workout)
    rates = (seg["rr_bpm"] for s in data["stages"] for seg in s["segments"] if seg["rr_bpm"] is not None)
    rr_max_bpm = max(rates, default=30.0)
    stages = [
        {"data": s, "chart": stage_chart(s, rr_max_bpm), "summary": stage_summary(s)} for s in data["stages"]
    ]
    return render_template(
        "web/workout.html",
        workout=data,
        stages=stages,
        pulse=pulse_chart(data["pulse"]),
        pulse_by_point={p["point"]: p for p in data["pulse"]},
        rr_confidence_min=domain.RR_CONFIDENCE_MIN,
        active="workouts",
    )
