"""Trends over a user's workouts: per-stage distributions (the paper's Fig. 4), RR vs pulse, weekly fitness.

The per-workout numbers (median RR of each stage, pulse at its protocol points, breath-class counts) are
read from `stage_summaries`, which every write keeps current (backend.summaries), so a request reads one
row per workout and stage instead of re-ranking every segment of the history. The weekly table is
grouped and averaged in the database; Python only handles the per-workout values the response returns
anyway (box statistics and Pearson's r over the points it sends).

Confidence (issue 19): the medians in the summaries count only confident readings (backend.domain), and
each answer says per stage what that rule left out: readings without a rate, rates below the
confidence threshold, and workouts whose stage had too few confident readings to have a median ("not
enough breathing heard": no point rather than a misleading one).

Quartile rule: linear interpolation between order statistics (Hyndman & Fan type 7; the default of numpy
and R, PostgreSQL's percentile_cont, `statistics.quantiles(method="inclusive")`). Whiskers: Tukey's, the
most extreme points within 1.5 IQR of the box. A single point is its own median, quartiles and whiskers.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from itertools import compress
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Date,
    DateTime,
    Float,
    Select,
    String,
    Subquery,
    and_,
    case,
    cast,
    func,
    select,
    type_coerce,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from backend.db import as_utc
from backend.domain import STAGES
from backend.models import FitnessMarker, PulseReading, StageSummary, Workout
from backend.schemas import TRENDS_MAX_POINTS_DEFAULT, Resolution, WeeklyTrends, WorkoutFilter
from backend.workouts import workout_conditions

WHISKER_IQR = 1.5


class IsoWeekStart(FunctionElement[date]):
    """The Monday that starts the ISO week of a DATE, on PostgreSQL and SQLite."""

    type = Date()
    inherit_cache = True


@compiles(IsoWeekStart)
def _week_start_default(element: IsoWeekStart, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(date_trunc('week', {compiler.process(element.clauses, **kw)}) AS DATE)"


@compiles(IsoWeekStart, "sqlite")
def _week_start_sqlite(element: IsoWeekStart, compiler: SQLCompiler, **kw: Any) -> str:
    # Back 6 days, then forward to the next Monday (or stay on it): the Monday on or before the date.
    return f"date({compiler.process(element.clauses, **kw)}, '-6 days', 'weekday 1')"


class UuidText(FunctionElement[str]):
    """A UUID column as its canonical text (8-4-4-4-12 lower-case hex), made by the database: a trends
    answer names every workout, and building then formatting a `uuid.UUID` per row in Python cost more
    than the rest of the row."""

    type = String()
    inherit_cache = True


@compiles(UuidText)
def _uuid_text_default(element: UuidText, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS TEXT)"


@compiles(UuidText, "sqlite")
def _uuid_text_sqlite(element: UuidText, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLAlchemy's Uuid type stores 32 hex digits without dashes where the database has no UUID type.
    column = compiler.process(element.clauses, **kw)
    parts = " || '-' || ".join(f"substr({column}, {start}, {length})" for start, length in _UUID_GROUPS)
    return f"lower({parts})"


_UUID_GROUPS = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))


# ---- per-workout values, from the stage summaries ------------------------------------------------------


def _summaries_of(user_id: int) -> ColumnElement[bool]:
    """Join condition workouts -> stage_summaries; the redundant user_id lets the database read the user's
    summaries by their index instead of probing (or scanning) for each workout."""
    return and_(StageSummary.workout_id == Workout.id, StageSummary.user_id == user_id)


def stage_values_query(user_id: int, filters: WorkoutFilter, *columns: Any) -> Select[Any]:
    """The one query behind /trends/stages and /trends/rr-vs-pulse (also EXPLAINed by the load bench):
    one row per filtered workout, oldest first: its id as text, `columns` of the workout, then the
    median RR and the pulse of stages 1-4 (None where the stage has no summary), then per stage 1-4 the
    readings without a rate, the low-confidence rates and 1 where the stage was not heard enough.

    One row per workout rather than per stage: the database pivots the four summaries (it reads them by
    the same index either way), and the driver and Python handle a quarter of the rows."""
    s = StageSummary

    def at(stage: int, column: Any) -> Any:
        return func.max(case((s.stage == stage, column)))

    return (
        select(
            UuidText(Workout.uuid),
            *columns,
            *(at(n, s.rr_median_bpm) for n in STAGES),
            *(at(n, s.pulse_bpm) for n in STAGES),
            *(at(n, s.no_rate_count) for n in STAGES),
            *(at(n, s.low_confidence_count) for n in STAGES),
            *(at(n, not_heard()) for n in STAGES),
        )
        .join(s, _summaries_of(user_id))
        .where(*workout_conditions(user_id, filters))
        .group_by(Workout.id, *columns)
        .order_by(Workout.started_at, Workout.id)
    )


def not_heard() -> Any:
    """1 for a summary whose stage has readings but no median (too few confident ones), else 0."""
    s = StageSummary
    return case((and_(s.segment_count > 0, s.rr_median_bpm.is_(None)), 1), else_=0)


# ---- statistics over the returned points --------------------------------------------------------------


def workout_numbers(user_id: int, filters: WorkoutFilter) -> Subquery:
    """Per workout, what the workouts list shows and sorts by: the stage median RRs (rr1..rr4, from the
    stage summaries the trends use), RR recovery (rr3 - rr4, as in the weekly trends) and the peak pulse
    reading; and not_heard1..4, 1 where a stage has readings but too few confident ones for a median."""
    s = StageSummary

    def rr_at(stage: int) -> Any:
        return func.max(case((s.stage == stage, s.rr_median_bpm))).label(f"rr{stage}")

    def not_heard_at(stage: int) -> Any:
        return func.max(case((s.stage == stage, not_heard()))).label(f"not_heard{stage}")

    per_workout = (
        select(
            Workout.id.label("workout_id"),
            *(rr_at(n) for n in STAGES),
            *(not_heard_at(n) for n in STAGES),
        )
        .outerjoin(s, _summaries_of(user_id))
        .where(*workout_conditions(user_id, filters))
        .group_by(Workout.id)
        .subquery("per_workout_rr")
    )
    peak_pulse = (
        select(PulseReading.workout_id, func.max(PulseReading.bpm).label("peak_pulse_bpm"))
        .join(Workout, Workout.id == PulseReading.workout_id)
        .where(*workout_conditions(user_id, filters))
        .group_by(PulseReading.workout_id)
        .subquery("peak_pulse")
    )
    w = per_workout.c
    return (
        select(
            w.workout_id,
            w.rr1,
            w.rr2,
            w.rr3,
            w.rr4,
            (w.rr3 - w.rr4).label("rr_recovery_bpm"),
            peak_pulse.c.peak_pulse_bpm,
            *(w[f"not_heard{n}"] for n in STAGES),
        )
        .outerjoin(peak_pulse, peak_pulse.c.workout_id == w.workout_id)
        .subquery("workout_numbers")
    )


def box_stats(values: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles (type 7) and Tukey whiskers of `values`; all None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return {"median": None, "q1": None, "q3": None, "whisker_low": None, "whisker_high": None, "n": 0}
    if len(ordered) == 1:
        q1 = median = q3 = ordered[0]
    else:
        q1, median, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    reach = WHISKER_IQR * (q3 - q1)
    return {
        "median": median,
        "q1": q1,
        "q3": q3,
        "whisker_low": min(v for v in ordered if v >= q1 - reach),
        "whisker_high": max(v for v in ordered if v <= q3 + reach),
        "n": len(ordered),
    }


def pearson_r(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    try:
        return statistics.correlation(xs, ys)
    except statistics.StatisticsError:  # fewer than two pairs, or one side constant
        return None


# ---- resolution: one point per workout, or per ISO week -------------------------------------------------


def choose_resolution(requested: str, workouts: int, max_points: int) -> Resolution:
    """ "workout" or "week": what `auto` means for a history of `workouts` filtered workouts."""
    if requested == "auto":
        return "workout" if workouts <= max_points else "week"
    if requested not in ("workout", "week"):
        raise ValueError(f"unknown resolution {requested!r}")
    return "week" if requested == "week" else "workout"


class WeekGroups:
    """The documented down-sampling (docs/api.md, "Resolution"): workouts grouped by the ISO week of their
    local date, weeks oldest first; per week and series, the number of values present and their mean
    (`statistics.fmean`: an exactly rounded sum, so the order of the values cannot change it).

    The rows are grouped once per request; each series then only gathers its values week by week."""

    def __init__(self, days: Sequence[date]) -> None:
        groups: dict[date, list[int]] = {}
        for j, day in enumerate(days):
            groups.setdefault(day - timedelta(days=day.weekday()), []).append(j)
        self.weeks = sorted(groups)
        self.rows = [groups[w] for w in self.weeks]

    def means(self, *series: Sequence[float | None]) -> tuple[list[str], list[int], list[list[float]]]:
        """Per week with a row where every series has a value: its Monday, how many such rows, and the
        mean of each series over them."""
        weeks, counts = [], []
        means: list[list[float]] = [[] for _ in series]
        first, *others = series
        for week, rows in zip(self.weeks, self.rows, strict=True):
            if others:
                kept = [j for j in rows if first[j] is not None and all(v[j] is not None for v in others)]
                gathered = [[values[j] for j in kept] for values in series]
            else:
                gathered = [[value for j in rows if (value := first[j]) is not None]]
            if not gathered[0]:
                continue
            weeks.append(week.isoformat())
            counts.append(len(gathered[0]))
            for out, values in zip(means, gathered, strict=True):
                out.append(math.fsum(values) / len(values))  # type: ignore[arg-type]  # fmean: fsum / n
        return weeks, counts, means


def _distribution(points: list[tuple[Any, float]]) -> dict[str, Any]:
    """Box statistics and one point per workout, from (workout id, value) pairs."""
    return {
        **box_stats([v for _, v in points]),
        "points": [v for _, v in points],
        "workout_ids": [w for w, _ in points],
    }


def _distribution_at(
    ids: Sequence[str], groups: WeekGroups | None, values: Sequence[float | None]
) -> dict[str, Any]:
    """A Distribution document: box statistics over every workout's value, the points one per workout, or
    per week when `groups` is given."""
    present = [v is not None for v in values]
    if groups is None:
        pairs = list(zip(compress(ids, present), compress(values, present), strict=True))
        return {**_distribution(pairs), "weeks": None, "counts": None}  # type: ignore[arg-type]
    points: list[float] = list(compress(values, present))  # type: ignore[arg-type]
    weeks, counts, (means,) = groups.means(values)
    return {**box_stats(points), "points": means, "workout_ids": [], "weeks": weeks, "counts": counts}


def _transposed(rows: Sequence[Sequence[Any]], width: int) -> list[Sequence[Any]]:
    """Rows as columns (one tuple per column): the per-stage work then runs over whole columns in C."""
    return list(zip(*rows, strict=True)) if rows else [()] * width


# ---- endpoints' queries -------------------------------------------------------------------------------

# stage_values_query's per-stage kinds, each len(STAGES) columns wide, in order
RR, PULSE, NO_RATE, LOW_CONFIDENCE, NOT_HEARD = range(5)
_KINDS = 5


def stage_trends(
    session: Session,
    user_id: int,
    filters: WorkoutFilter,
    resolution: str = "workout",
    max_points: int = TRENDS_MAX_POINTS_DEFAULT,
) -> dict[str, Any]:
    """The StageTrends document, built JSON-ready (validating our own thousands of points would cost more
    than the query; tests/backend/test_stage_summaries.py checks it against the validated reference).
    Box statistics and counts are over every filtered workout; `resolution` only decides how the points
    are sent (choose_resolution)."""
    rows = session.execute(stage_values_query(user_id, filters, Workout.local_date)).all()
    chosen = choose_resolution(resolution, len(rows), max_points)
    k = len(STAGES)
    ids, days, *columns = _transposed(rows, 2 + _KINDS * k)
    groups = WeekGroups(days) if chosen == "week" else None

    def column(kind: int, i: int) -> Sequence[Any]:
        return columns[kind * k + i]

    stages = []
    for i, n in enumerate(STAGES):
        left_out = (sum(filter(None, column(kind, i))) for kind in (NO_RATE, LOW_CONFIDENCE, NOT_HEARD))
        stages.append(
            {
                "stage": n,
                "rr": _distribution_at(ids, groups, column(RR, i)),
                "pulse": _distribution_at(ids, groups, column(PULSE, i)),
                "rr_left_out": left_out_json(*left_out),
            }
        )
    return {"resolution": chosen, "stages": stages}


def left_out_json(without_rate: int, low_confidence: int, not_enough_heard: int) -> dict[str, int]:
    """An RrLeftOut document (schemas.RrLeftOut)."""
    return {
        "readings_without_rate": int(without_rate),
        "readings_low_confidence": int(low_confidence),
        "not_enough_heard": int(not_enough_heard),
    }


def rr_vs_pulse(
    session: Session,
    user_id: int,
    filters: WorkoutFilter,
    resolution: str = "workout",
    max_points: int = TRENDS_MAX_POINTS_DEFAULT,
    format: str = "objects",
) -> dict[str, Any]:
    """The RrVsPulse document, built JSON-ready like `stage_trends`; n and Pearson's r are over every
    per-workout pair, `resolution` and `format` only decide how the pairs are sent."""
    if format not in ("objects", "columns"):
        raise ValueError(f"unknown format {format!r}")
    # The start is read as the driver gives it and made a UTC instant in Python, once per workout.
    raw_start = type_coerce(Workout.started_at, DateTime(timezone=True))
    query = stage_values_query(user_id, filters, raw_start, Workout.utc_offset_min, Workout.local_date)
    rows = session.execute(query).all()
    chosen = choose_resolution(resolution, len(rows), max_points)
    k = len(STAGES)
    ids, starts, offsets, days, *columns = _transposed(rows, 4 + _KINDS * k)
    groups = WeekGroups(days) if chosen == "week" else None
    local_starts: dict[int, str] = {}

    def local_start(j: int) -> str:
        if j not in local_starts:
            moment = as_utc(starts[j]).astimezone(timezone(timedelta(minutes=offsets[j])))
            local_starts[j] = json_datetime(moment)
        return local_starts[j]

    stages = []
    for i, n in enumerate(STAGES):
        rr_all, pulse_all = columns[RR * k + i], columns[PULSE * k + i]
        both = zip(rr_all, pulse_all, strict=True)
        keep = [j for j, (a, b) in enumerate(both) if a is not None and b is not None]
        rr = [rr_all[j] for j in keep]
        pulse = [pulse_all[j] for j in keep]
        entry: dict[str, Any] = {"stage": n, "n": len(keep), "pairs": [], "pearson_r": pearson_r(rr, pulse)}
        entry["weeks"] = entry["columns"] = None
        if groups is None:
            key = "pairs"
            by_field: dict[str, list[Any]] = {
                "workout_id": [ids[j] for j in keep],
                "started_at": [local_start(j) for j in keep],
                "rr_bpm": rr,
                "pulse_bpm": pulse,
            }
        else:
            week_text, counts, (rr_means, pulse_means) = groups.means(rr_all, pulse_all)
            key = "weeks"
            by_field = {
                "week_start": week_text,
                "n": counts,
                "rr_bpm": rr_means,
                "pulse_bpm": pulse_means,
            }
        if format == "objects":  # the same values, one object per point
            entry[key] = [
                dict(zip(by_field, row, strict=True)) for row in zip(*by_field.values(), strict=True)
            ]
        else:
            entry["columns"] = by_field
        stages.append(entry)
    return {"resolution": chosen, "stages": stages}


def json_datetime(moment: datetime) -> str:
    """An aware datetime as the API writes every other one (pydantic's JSON): ISO 8601, UTC as "Z"."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def weekly_query(user_id: int, filters: WorkoutFilter) -> Select[Any]:
    """Per ISO week of the workouts' local dates, the weekly numbers, aggregated in the database from the
    stage summaries (also EXPLAINed by the load bench)."""
    s = StageSummary

    def at(stage: int, column: Any, label: str) -> Any:
        return func.max(case((s.stage == stage, column))).label(label)

    per_workout = (
        select(
            Workout.id.label("workout_id"),
            Workout.local_date,
            *(at(n, s.rr_median_bpm, f"rr{n}") for n in STAGES),
            at(3, s.pulse_after_bpm, "after_3"),
            at(4, s.pulse_after_bpm, "after_4"),
            func.sum(s.heavy_count).label("heavy"),
            func.sum(s.classified_count).label("classified"),
            *(at(n, s.no_rate_count, f"no_rate{n}") for n in STAGES),
            *(at(n, s.low_confidence_count, f"low_confidence{n}") for n in STAGES),
            *(at(n, not_heard(), f"not_heard{n}") for n in STAGES),
        )
        .outerjoin(s, _summaries_of(user_id))
        .where(*workout_conditions(user_id, filters))
        .group_by(Workout.id, Workout.local_date)
        .subquery("per_workout")
    )
    w = per_workout.c
    peak = case((w.rr2.is_(None), w.rr3), (w.rr3.is_(None), w.rr2), (w.rr2 >= w.rr3, w.rr2), else_=w.rr3)
    week = IsoWeekStart(w.local_date)
    return (
        select(
            week.label("week_start"),
            func.count(w.workout_id).label("workouts"),
            func.avg(w.rr1).label("resting_rr_bpm"),
            func.avg(peak).label("peak_rr_bpm"),
            func.avg(w.rr3 - w.rr4).label("rr_recovery_bpm"),
            func.avg(w.after_3 - w.after_4).label("hr_recovery_bpm"),
            (cast(func.sum(w.heavy), Float) / func.nullif(func.sum(w.classified), 0)).label("heavy_share"),
            *(
                func.coalesce(func.sum(w[f"{kind}{n}"]), 0).label(f"{kind}{n}")
                for kind in LEFT_OUT_KINDS
                for n in STAGES
            ),
        )
        .select_from(per_workout)
        .group_by(week)
        .order_by(week)
    )


LEFT_OUT_KINDS = ("no_rate", "low_confidence", "not_heard")  # weekly_query's labels, in RrLeftOut order


def weekly(session: Session, user_id: int, filters: WorkoutFilter) -> dict[str, Any]:
    """One row per ISO week of the workouts' local dates."""
    rows = session.execute(weekly_query(user_id, filters)).mappings()
    weeks = []
    for row in rows:
        start = row["week_start"]
        iso = start.isocalendar()
        weeks.append(
            {
                "week": f"{iso.year}-W{iso.week:02d}",
                "week_start": start,
                "workouts": row["workouts"],
                **{
                    k: _float(row[k])
                    for k in (
                        "resting_rr_bpm",
                        "peak_rr_bpm",
                        "rr_recovery_bpm",
                        "hr_recovery_bpm",
                        "heavy_share",
                    )
                },
                "rr_left_out": [
                    {"stage": n, **left_out_json(*(row[f"{kind}{n}"] for kind in LEFT_OUT_KINDS))}
                    for n in STAGES
                ],
            }
        )
    weeks = _with_markers(weeks, weekly_markers(session, user_id, filters))
    return WeeklyTrends.model_validate({"weeks": weeks}).model_dump(mode="json")


# ---- fitness markers per week (issue 16) -------------------------------------------------------------

# Week field of each marker kind: its weekly mean, in the kind's unit.
MARKER_FIELDS = {
    "resting_heart_rate": "resting_hr_bpm",
    "hrv_sdnn": "hrv_sdnn_ms",
    "vo2_max": "vo2_max_ml_kg_min",
    "walking_heart_rate_average": "walking_hr_bpm",
}


def weekly_markers(session: Session, user_id: int, filters: WorkoutFilter) -> dict[date, dict[str, float]]:
    """Mean of each fitness marker per ISO week of its local date, in SQL. The date filters apply (a date
    is the marker's local day, an instant its start); the activity filter does not: markers belong to no
    workout."""
    conditions = [FitnessMarker.user_id == user_id]
    if isinstance(filters.from_, datetime):
        conditions.append(FitnessMarker.started_at >= filters.from_)
    elif isinstance(filters.from_, date):
        conditions.append(FitnessMarker.local_date >= filters.from_)
    if isinstance(filters.to, datetime):
        conditions.append(FitnessMarker.started_at < filters.to)
    elif isinstance(filters.to, date):
        conditions.append(FitnessMarker.local_date <= filters.to)
    week = IsoWeekStart(FitnessMarker.local_date)
    rows = session.execute(
        select(week.label("week_start"), FitnessMarker.kind, func.avg(FitnessMarker.value).label("mean"))
        .where(*conditions)
        .group_by(week, FitnessMarker.kind)
    )
    by_week: dict[date, dict[str, float]] = defaultdict(dict)
    for start, kind, mean in rows:
        by_week[start][MARKER_FIELDS[kind]] = float(mean)
    return by_week


def _with_markers(weeks: list[dict[str, Any]], markers: dict[date, dict[str, float]]) -> list[dict[str, Any]]:
    """The workout weeks with their markers, plus weeks that have markers but no workout."""
    empty = dict.fromkeys(MARKER_FIELDS.values())
    merged = {w["week_start"]: w | empty | markers.get(w["week_start"], {}) for w in weeks}
    for start, values in markers.items():
        if start not in merged:
            iso = start.isocalendar()
            merged[start] = {
                "week": f"{iso.year}-W{iso.week:02d}",
                "week_start": start,
                "workouts": 0,
                **dict.fromkeys(("resting_rr_bpm", "peak_rr_bpm", "rr_recovery_bpm", "hr_recovery_bpm")),
                "heavy_share": None,
                "rr_left_out": [{"stage": n, **left_out_json(0, 0, 0)} for n in STAGES],
                **empty,
                **values,
            }
    return [merged[start] for start in sorted(merged)]


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
