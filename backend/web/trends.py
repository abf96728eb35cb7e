"""The trends page: this period against the previous one, per-stage box plots (the paper's Fig. 4), RR
against pulse, weekly fitness lines.

The numbers come from the same functions as `/api/v1/trends/*` (backend.trends), so the pictures and
the API can never disagree; this module only picks the periods and turns numbers into chart geometry.
A period comparison is two `/api/v1/trends/stages` answers, one per period (`from`/`to` dates).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from flask import Blueprint, render_template, request
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from wtforms import Form, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Optional

from backend import domain, trends
from backend.db import get_session
from backend.models import Workout
from backend.schemas import WorkoutFilter
from backend.web.auth import current_web_user
from backend.web.charts import box_plot, comparison_box_plot, scatter, weekly_lines
from backend.web.forms import FilterForm
from backend.web.workouts import has_workouts
from backend.workouts import workout_conditions

bp = Blueprint("trends", __name__)
PERIOD_WEEKS = (2, 4, 8, 12)
DEFAULT_PERIOD_WEEKS = 4


class PeriodForm(Form):
    """How long each compared period is (`weeks` in the query string, kept beside the filter's keys)."""

    weeks = SelectField(
        "Compare the last",
        choices=[SelectChoice(n, f"{n} weeks") for n in PERIOD_WEEKS],
        coerce=int,
        default=DEFAULT_PERIOD_WEEKS,
        validators=[Optional()],
    )


@dataclass(frozen=True)
class Period:
    key: str  # "previous" or "current"
    first_day: date
    last_day: date
    label: str

    def filter(self, activity: Any) -> WorkoutFilter:
        return WorkoutFilter.model_validate(
            {"from": self.first_day, "to": self.last_day, "activity": activity}
        )

    def query(self, activity: Any) -> dict[str, str]:
        """The API query string that gives this period's numbers."""
        out = {"from": self.first_day.isoformat(), "to": self.last_day.isoformat()}
        return out | ({"activity": activity.value} if activity is not None else {})


def comparison_periods(session: Session, user_id: int, filters: WorkoutFilter, weeks: int) -> list[Period]:
    """The `weeks` before the end (the filter's "To" day, else the latest workout's local day) and the
    `weeks` before those; none when there is no workout to end at."""
    end = filters.to if isinstance(filters.to, date) else None
    if end is None:
        end = session.scalar(
            select(func.max(Workout.local_date)).where(
                *workout_conditions(user_id, WorkoutFilter.model_validate({"activity": filters.activity}))
            )
        )
    if end is None:
        return []
    span = timedelta(weeks=weeks)
    start = end - span + timedelta(days=1)
    return [
        Period("previous", start - span, start - timedelta(days=1), f"the {weeks} weeks before"),
        Period("current", start, end, f"the {weeks} weeks to {end.day} {end:%b %Y}"),
    ]


def rr_recovery(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over the period's workouts of their RR recovery (stage 3 median RR minus stage 4's):
    how far breathing has come down after a few minutes of cooling down; higher is fitter."""
    by_stage = {s["stage"]: dict(zip(s["rr"]["workout_ids"], s["rr"]["points"], strict=True)) for s in stages}
    drops = [rr3 - by_stage[4][w] for w, rr3 in by_stage[3].items() if w in by_stage[4]]
    return {"median": statistics.median(drops) if drops else None, "n": len(drops)}


def compare(session: Session, user_id: int, filters: WorkoutFilter, weeks: int) -> dict[str, Any] | None:
    periods = comparison_periods(session, user_id, filters, weeks)
    if not periods:
        return None
    previous, current = (trends.stage_trends(session, user_id, p.filter(filters.activity)) for p in periods)
    labels = (periods[0].label, periods[1].label)
    recovery = {"previous": rr_recovery(previous["stages"]), "current": rr_recovery(current["stages"])}
    before, now = recovery["previous"]["median"], recovery["current"]["median"]
    change = None if before is None or now is None else now - before
    return {
        "weeks": weeks,
        "periods": periods,
        "api_queries": {p.key: p.query(filters.activity) for p in periods},
        "stages": {"previous": previous["stages"], "current": current["stages"]},
        "recovery": recovery,
        "recovery_change": change,
        "box_rr": comparison_box_plot(previous["stages"], current["stages"], "rr", labels),
        "box_pulse": comparison_box_plot(previous["stages"], current["stages"], "pulse", labels),
    }


@bp.get("/trends")
def index() -> tuple[str, int]:
    user = current_web_user()
    form = FilterForm(request.args)
    period_form = PeriodForm(request.args)
    context: dict[str, Any] = {
        "form": form,
        "period_form": period_form,
        "active": "trends",
        "matching": None,
        "rr_confidence_min": domain.RR_CONFIDENCE_MIN,
    }
    if not form.validate() or not period_form.validate():
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
        "comparison": compare(session, user.user_id, filters, period_form.weeks.data or DEFAULT_PERIOD_WEEKS),
        "stages": stages,
        "weeks": weeks,
        "pairs": pairs,
        "box_rr": box_plot(stages, "rr"),
        "box_pulse": box_plot(stages, "pulse"),
        "scatter": scatter(pairs),
        "weekly": weekly_lines(weeks),
    }
    return render_template("web/trends.html", **context), 200
