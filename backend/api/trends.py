"""Trend endpoints; the numbers are computed in backend.trends (see its docstring for the quartile rule)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from backend import trends
from backend.api.auth import current_principal
from backend.api.openapi import operation
from backend.db import get_session
from backend.schemas import RrVsPulse, StageTrends, WeeklyTrends, WorkoutFilter

bp = Blueprint("trends", __name__)
TAGS = ("trends",)


@bp.get("/trends/stages")
@operation(
    "RR and pulse distributions per stage",
    description="Per stage, the distribution over workouts of the per-workout median RR and of the pulse at "
    "that stage's protocol points (mean when a stage has two). Quartiles: linear interpolation between "
    "order statistics (Hyndman-Fan type 7, as numpy and PostgreSQL percentile_cont); whiskers: the most "
    "extreme points within 1.5 IQR of the box (Tukey).",
    tags=TAGS,
    query=WorkoutFilter,
    responses={200: ("Four stages", StageTrends)},
)
def stages(query: WorkoutFilter) -> dict[str, Any]:
    return trends.stage_trends(get_session(), current_principal().user_id, query)


@bp.get("/trends/rr-vs-pulse")
@operation(
    "Per-workout (median RR, pulse) pairs per stage, with Pearson's r",
    tags=TAGS,
    query=WorkoutFilter,
    responses={200: ("Four stages", RrVsPulse)},
)
def rr_vs_pulse(query: WorkoutFilter) -> dict[str, Any]:
    return trends.rr_vs_pulse(get_session(), current_principal().user_id, query)


@bp.get("/trends/weekly")
@operation(
    "Weekly fitness: resting RR, peak RR, RR and heart-rate recovery, heavy-breathing share",
    description="Weeks are ISO weeks of each workout's local start date. Recoveries are drops, positive "
    "when RR or pulse fell from stage 3 to stage 4.",
    tags=TAGS,
    query=WorkoutFilter,
    responses={200: ("Weeks, oldest first", WeeklyTrends)},
)
def weekly(query: WorkoutFilter) -> dict[str, Any]:
    return trends.weekly(get_session(), current_principal().user_id, query)
