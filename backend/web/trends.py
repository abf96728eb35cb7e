"""The trends page: per-stage box plots (the paper's Fig. 4), RR against pulse, weekly fitness lines.

The numbers come from the same functions as `/api/v1/trends/*` (backend.trends), so the pictures and
the API can never disagree; this module only turns them into chart geometry.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request
from sqlalchemy import func, select

from backend import trends
from backend.db import get_session
from backend.models import Workout
from backend.web.auth import current_web_user
from backend.web.charts import box_plot, scatter, weekly_lines
from backend.web.forms import FilterForm
from backend.web.workouts import has_workouts
from backend.workouts import workout_conditions

bp = Blueprint("trends", __name__)


@bp.get("/trends")
def index() -> tuple[str, int]:
    user = current_web_user()
    form = FilterForm(request.args)
    context: dict[str, Any] = {"form": form, "active": "trends", "matching": None}
    if not form.validate():
        return render_template("web/trends.html", **context), 400
    filters, session = form.to_filter(), get_session()
    context["matching"] = session.scalar(
        select(func.count()).select_from(Workout).where(*workout_conditions(user.user_id, filters))
    )
    context["has_workouts"] = bool(context["matching"]) or has_workouts(user.user_id)
    stages = trends.stage_trends(session, user.user_id, filters)["stages"]
    pairs = trends.rr_vs_pulse(session, user.user_id, filters)["stages"]
    weeks = trends.weekly(session, user.user_id, filters)["weeks"]
    context |= {
        "stages": stages,
        "weeks": weeks,
        "pairs": pairs,
        "box_rr": box_plot(stages, "rr"),
        "box_pulse": box_plot(stages, "pulse"),
        "scatter": scatter(pairs),
        "weekly": weekly_lines(weeks),
    }
    return render_template("web/trends.html", **context), 200
