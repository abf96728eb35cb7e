"""Pushes from the Health Auto Export app (its "REST API" automation, JSON format).

    {"data": {"metrics": [{"name": "heart_rate", "units": "bpm",
                           "data": [{"date": "2024-09-28 16:51:59 +1000", "Min": 61, "Avg": 64, "Max": 70}]},
                          {"name": "respiratory_rate", "units": "count/min",
                           "data": [{"date": "2024-09-28 4:51:59 pm +1000", "qty": 14.5}]}],
              "workouts": [{"name": "Outdoor Run", "start": "...", "end": "...",
                            "heartRateData": [{"date": "...", "Min": 120, "Avg": 131, "Max": 140}],
                            "heartRateRecovery": [...]}]}}

Heart rate comes as per-minute Min/Avg/Max (stored as bpm = Avg, with bpm_min/bpm_max) or, in older
versions, as `qty`; respiratory rate as `qty`. Workouts become health-app workouts, and their
heartRateData and heartRateRecovery points heart-rate samples. A sample's source is the point's `source`
when the app sends one, else "Health Auto Export".

Syncs overlap and re-send data: a sample already stored (same kind, start and source) is skipped, so a
re-send never duplicates. A push is imported in one transaction: malformed points (a date in neither
format, a missing value) reject the whole push with 422 naming the field, and nothing is stored. Values
outside the plausible range (heart rate 25-250, RR 0-80 per minute) are skipped and reported as warnings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from backend.domain import implausible_time
from backend.imports.dates import parse_health_datetime
from backend.imports.matching import match_workouts
from backend.imports.records import (
    HEART_RATE,
    RESPIRATORY_RATE,
    HealthWorkoutIn,
    SampleIn,
    clean_source,
    sample_problem,
    store_health_workouts,
    store_samples,
)
from backend.imports.schemas import HaePoint, HaeWorkout, HealthAutoExportPush
from backend.problems import FieldError, ProblemError, field_errors

SOURCE = "Health Auto Export"
METRICS = {"heart_rate": HEART_RATE, "respiratory_rate": RESPIRATORY_RATE}
PER_MINUTE_UNITS = {"bpm", "count/min", "breaths/min", "count/minute", "/min"}
MAX_ERRORS = 50

Loc = tuple[str | int, ...]


@dataclass
class Converted:
    samples: list[SampleIn] = field(default_factory=list)
    workouts: list[HealthWorkoutIn] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: int = 0
    errors: list[FieldError] = field(default_factory=list)

    def error(self, loc: Loc, detail: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(FieldError(loc, detail))

    def skip(self, where: str, why: str) -> None:
        self.skipped += 1
        self.warnings.append(f"{where}: {why}")


def _point(raw: dict[str, Any], loc: Loc, out: Converted) -> HaePoint | None:
    try:
        return HaePoint.model_validate(raw)
    except ValidationError as exc:
        for err in field_errors(exc, "body"):
            out.error((*loc, *err.loc), err.detail)
        return None


def _sample(raw: dict[str, Any], kind: str, loc: Loc, out: Converted) -> None:
    point = _point(raw, loc, out)
    if point is None:
        return
    try:
        moment = parse_health_datetime(point.date)
    except ValueError as exc:
        out.error((*loc, "date"), str(exc))
        return
    if problem := implausible_time(moment):
        out.skip(f"{kind} of {point.date}", problem)
        return
    if kind == HEART_RATE:
        value, low, high = (point.Avg if point.Avg is not None else point.qty), point.Min, point.Max
    else:
        value, low, high = (point.qty if point.qty is not None else point.Avg), None, None
    if value is None:
        out.error(loc, "needs a value: Avg (or qty) for heart rate, qty for respiratory rate")
        return
    if problem := sample_problem(kind, value):
        out.skip(f"{kind} of {point.date}", problem)
        return
    out.samples.append(SampleIn(kind, moment, moment, value, clean_source(point.source, SOURCE), low, high))


def _quantity(extra: dict[str, Any], *path: str) -> float | None:
    """A `{"qty": n}` value nested in a workout's extra fields, e.g. avgHeartRate or heartRate.avg."""
    node: Any = extra
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node = node.get("qty")
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def _workout(workout: HaeWorkout, loc: Loc, out: Converted) -> None:
    times = []
    for name in ("start", "end"):
        try:
            times.append(parse_health_datetime(getattr(workout, name)))
        except ValueError as exc:
            out.error((*loc, name), str(exc))
    first_new = len(out.samples)
    for key in ("heartRateData", "heartRateRecovery"):
        for j, raw in enumerate(getattr(workout, key)):
            _sample(raw, HEART_RATE, (*loc, key, j), out)
    if len(times) < 2:
        return
    started_at, ended_at = times
    if problem := implausible_time(started_at) or implausible_time(ended_at):
        out.skip(f"workout {workout.name or ''} of {workout.start}".replace("  ", " "), problem)
        return
    if ended_at < started_at:
        out.error((*loc, "end"), "the workout ends before it starts")
        return
    extra = workout.model_extra or {}
    during = [s for s in out.samples[first_new:] if started_at <= s.started_at <= ended_at]
    location = (workout.location or "").strip().lower()
    out.workouts.append(
        HealthWorkoutIn(
            source=SOURCE,
            activity_type=clean_source(workout.name, "Workout", max_chars=100),
            started_at=started_at,
            ended_at=ended_at,
            indoor={"indoor": True, "outdoor": False}.get(location),
            hr_avg_bpm=_quantity(extra, "avgHeartRate")
            or _quantity(extra, "heartRate", "avg")
            or (sum(s.bpm for s in during) / len(during) if during else None),
            hr_min_bpm=_quantity(extra, "minHeartRate")
            or _quantity(extra, "heartRate", "min")
            or _min(s.bpm_min if s.bpm_min is not None else s.bpm for s in during),
            hr_max_bpm=_quantity(extra, "maxHeartRate")
            or _quantity(extra, "heartRate", "max")
            or _max(s.bpm_max if s.bpm_max is not None else s.bpm for s in during),
        )
    )


def _min(numbers: Iterable[float]) -> float | None:
    return min(numbers, default=None)


def _max(numbers: Iterable[float]) -> float | None:
    return max(numbers, default=None)


def convert(push: HealthAutoExportPush) -> Converted:
    """The samples and workouts of a push; raises 422 naming every malformed field (up to 50)."""
    out = Converted()
    for i, metric in enumerate(push.data.metrics):
        kind = METRICS.get(metric.name)
        if kind is None:
            continue  # one of the dozens of metrics Respira does not use
        loc: Loc = ("data", "metrics", i)
        if metric.units is not None and metric.units.strip().lower() not in PER_MINUTE_UNITS:
            out.error(
                (*loc, "units"), f"{metric.units!r} is not a rate per minute (expected count/min or bpm)"
            )
            continue
        for j, raw in enumerate(metric.data):
            _sample(raw, kind, (*loc, "data", j), out)
    for k, workout in enumerate(push.data.workouts):
        _workout(workout, ("data", "workouts", k), out)
    if out.errors:
        raise ProblemError.invalid(out.errors, "Invalid Health Auto Export data")
    return out


def import_push(
    session: Session, user_id: int, push: HealthAutoExportPush, tolerance_s: float
) -> tuple[dict[str, int], list[str]]:
    """Store a push (in the caller's transaction); returns the job counts and warnings."""
    converted = convert(push)
    added = store_samples(session, user_id, converted.samples)
    counts = {
        "records_read": len(converted.samples) + len(converted.workouts) + converted.skipped,
        "heart_rate_read": sum(s.kind == HEART_RATE for s in converted.samples),
        "heart_rate_added": added.get(HEART_RATE, 0),
        "respiratory_rate_read": sum(s.kind == RESPIRATORY_RATE for s in converted.samples),
        "respiratory_rate_added": added.get(RESPIRATORY_RATE, 0),
        "health_workouts_read": len(converted.workouts),
        "health_workouts_added": store_health_workouts(session, user_id, converted.workouts),
        "skipped": converted.skipped,
    }
    moments: list[datetime] = [s.started_at for s in converted.samples] + [
        t for w in converted.workouts for t in (w.started_at, w.ended_at)
    ]
    if moments:
        counts |= match_workouts(session, user_id, min(moments), max(moments), tolerance_s).as_dict()
    else:
        counts |= {"workouts_linked": 0, "samples_attached": 0, "pulse_filled": 0}
    return counts, converted.warnings
