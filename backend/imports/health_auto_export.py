"""Pushes from the Health Auto Export app (its "REST API" automation, JSON format).

    {"data": {"metrics": [{"name": "heart_rate", "units": "bpm",
                           "data": [{"date": "2024-09-28 16:51:59 +1000", "Min": 61, "Avg": 64, "Max": 70}]},
                          {"name": "respiratory_rate", "units": "count/min",
                           "data": [{"date": "2024-09-28 4:51:59 pm +1000", "qty": 14.5}]}],
              "workouts": [{"name": "Outdoor Run", "start": "...", "end": "...",
                            "heartRateData": [{"date": "...", "Min": 120, "Avg": 131, "Max": 140}],
                            "heartRateRecovery": [...]}]}}

Heart rate comes as per-minute Min/Avg/Max (stored as bpm = Avg, with bpm_min/bpm_max) or, in older
versions, as `qty`; respiratory rate as `qty`. The fitness markers resting_heart_rate,
heart_rate_variability (SDNN, ms), vo2_max and walking_heart_rate_average come as `qty` and are stored as
fitness markers. A point's own `end`, when sent, is kept as the sample's end (else it ends where it
starts). Workouts become health-app workouts, and their heartRateData and heartRateRecovery points
heart-rate samples. A sample's source is the point's `source` when the app sends one, else "Health Auto
Export"; a workout's source is its own `source`, else the source its heart-rate points name most.

Everything else is counted as skipped, by type, with one warning per type: metrics Respira does not
import (step_count, sleep_analysis...), other data arrays (symptoms, ecg, stateOfMind...) and a workout's
other series (route, activeEnergy...).

Syncs overlap and re-send data: a sample already stored (same kind, start and source) is skipped, so a
re-send never duplicates. A push is imported in one transaction: malformed points (a date in neither
format, a missing value) reject the whole push with 422 naming the field, and nothing is stored. Values
outside the plausible range (heart rate 25-250, RR 0-80 per minute; fitness markers: their own ranges)
and times outside backend.domain's (2000 to now + 1 day) are skipped and reported as warnings. Pushes too
large to parse whole are read as a stream by backend.imports.push_stream, with these same functions.
"""

from __future__ import annotations

from collections import Counter
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
    HRV_SDNN,
    MARKERS,
    RESPIRATORY_RATE,
    RESTING_HEART_RATE,
    VO2_MAX,
    WALKING_HEART_RATE,
    HealthWorkoutIn,
    MarkerIn,
    SampleIn,
    clean_source,
    local_day,
    marker_problem,
    sample_problem,
    store_health_workouts,
    store_markers,
    store_samples,
)
from backend.imports.report import IMPLAUSIBLE_TIME, NOT_IMPORTED, OUT_OF_RANGE, Skipped, SkipTally
from backend.imports.schemas import HaePoint, HaeWorkout, HealthAutoExportPush
from backend.problems import FieldError, ProblemError, field_errors

SOURCE = "Health Auto Export"
METRICS = {"heart_rate": HEART_RATE, "respiratory_rate": RESPIRATORY_RATE}
MARKER_METRICS = {
    "resting_heart_rate": RESTING_HEART_RATE,
    "heart_rate_variability": HRV_SDNN,  # the app sends Apple's SDNN, in ms
    "vo2_max": VO2_MAX,
    "walking_heart_rate_average": WALKING_HEART_RATE,
}
PER_MINUTE_UNITS = {"bpm", "count/min", "breaths/min", "count/minute", "/min"}
MARKER_UNITS = {
    RESTING_HEART_RATE: PER_MINUTE_UNITS,
    WALKING_HEART_RATE: PER_MINUTE_UNITS,
    HRV_SDNN: {"ms"},
    VO2_MAX: {"ml/(kg·min)", "ml/kg·min", "ml/min·kg", "ml/kg/min", "ml/(kg*min)", "ml/kg*min"},
}
IMPORTED_ARRAYS = {"metrics", "workouts"}
WORKOUT_SERIES_READ = {"heartRateData", "heartRateRecovery"}
MAX_ERRORS = 50

Loc = tuple[str | int, ...]


@dataclass
class Converted:
    samples: list[SampleIn] = field(default_factory=list)
    markers: list[MarkerIn] = field(default_factory=list)
    workouts: list[HealthWorkoutIn] = field(default_factory=list)
    skips: SkipTally = field(default_factory=SkipTally)
    errors: list[FieldError] = field(default_factory=list)

    def error(self, loc: Loc, detail: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(FieldError(loc, detail))

    def skip(self, where: str, why: str, record_type: str, category: str = OUT_OF_RANGE) -> None:
        self.skips.add(Skipped(f"{where}: {why}", record_type, category))

    def skip_type(self, record_type: str, count: int, what: str) -> None:
        """A whole series not imported: counted, with one warning saying so."""
        if count:
            self.skips.add(Skipped(f"{what}: {count} not imported", record_type, NOT_IMPORTED), count)

    @property
    def skipped(self) -> int:
        return self.skips.total


def _point(raw: dict[str, Any], loc: Loc, out: Converted) -> HaePoint | None:
    try:
        return HaePoint.model_validate(raw)
    except ValidationError as exc:
        for err in field_errors(exc, "body"):
            out.error((*loc, *err.loc), err.detail)
        return None


def _moments(point: HaePoint, loc: Loc, out: Converted, record_type: str) -> tuple[datetime, datetime] | None:
    """The point's start (`date`) and end (its own `end` when sent, else the start). None when a date is
    malformed (an error: the push is refused) or outside the plausible range (the point is skipped)."""
    try:
        start = parse_health_datetime(point.date)
    except ValueError as exc:
        out.error((*loc, "date"), str(exc))
        return None
    end = start
    if point.end is not None:
        try:
            end = parse_health_datetime(point.end)
        except ValueError as exc:
            out.error((*loc, "end"), str(exc))
            return None
    if problem := implausible_time(start) or implausible_time(end):
        out.skip(f"{record_type} of {point.date}", problem, record_type, IMPLAUSIBLE_TIME)
        return None
    if end < start:
        out.error((*loc, "end"), "the point ends before it starts")
        return None
    return start, end


def _sample(raw: dict[str, Any], kind: str, loc: Loc, out: Converted) -> None:
    point = _point(raw, loc, out)
    if point is None:
        return
    moments = _moments(point, loc, out, kind)
    if moments is None:
        return
    if kind == HEART_RATE:
        value, low, high = (point.Avg if point.Avg is not None else point.qty), point.Min, point.Max
    else:
        value, low, high = (point.qty if point.qty is not None else point.Avg), None, None
    if value is None:
        out.error(loc, "needs a value: Avg (or qty) for heart rate, qty for respiratory rate")
        return
    if problem := sample_problem(kind, value):
        out.skip(f"{kind} of {point.date}", problem, kind)
        return
    source = clean_source(point.source, SOURCE)
    out.samples.append(SampleIn(kind, moments[0], moments[1], value, source, low, high))


def _marker(raw: dict[str, Any], metric: str, kind: str, loc: Loc, out: Converted) -> None:
    point = _point(raw, loc, out)
    if point is None:
        return
    moments = _moments(point, loc, out, metric)
    if moments is None:
        return
    value = point.qty if point.qty is not None else point.Avg
    if value is None:
        out.error(loc, "needs a value: qty")
        return
    if problem := marker_problem(kind, value):
        out.skip(f"{metric} of {point.date}", problem, metric)
        return
    source = clean_source(point.source, SOURCE)
    out.markers.append(MarkerIn(kind, moments[0], moments[1], value, source, local_day(moments[0])))


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
        where = f"workout {workout.name or ''} of {workout.start}".replace("  ", " ")
        out.skip(where, problem, "workout", IMPLAUSIBLE_TIME)
        return
    if ended_at < started_at:
        out.error((*loc, "end"), "the workout ends before it starts")
        return
    extra = workout.model_extra or {}
    for key, series in extra.items():
        if key not in WORKOUT_SERIES_READ and isinstance(series, list):
            out.skip_type(f"workout {key}", len(series), f"workout {workout.name or ''} {key} points")
    points = out.samples[first_new:]
    during = [s for s in points if started_at <= s.started_at <= ended_at]
    location = (workout.location or "").strip().lower()
    named = [s.source for s in points if s.source != SOURCE]
    own = extra.get("source") if isinstance(extra.get("source"), str) else None
    out.workouts.append(
        HealthWorkoutIn(
            # The app that recorded it ("Connect", "JustFit"), not the app that forwarded it.
            source=clean_source(own or (Counter(named).most_common(1)[0][0] if named else None), SOURCE),
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


def metric_usable(name: str, units: str | None, points: int, loc: Loc, out: Converted) -> bool:
    """Whether the points of metric `name` are read: a metric Respira does not import is counted as
    skipped (one warning), units that are not the metric's are an error at `loc` + units."""
    kind = METRICS.get(name) or MARKER_METRICS.get(name)
    if kind is None:  # one of the dozens of metrics Respira does not use: counted, with one warning
        out.skip_type(name, points, f"metric {name!r} points")
        return False
    if units is None:
        return True
    normal = units.strip().lower().replace(" ", "")
    if name in METRICS and normal not in PER_MINUTE_UNITS:
        out.error((*loc, "units"), f"{units!r} is not a rate per minute (expected count/min or bpm)")
        return False
    if name in MARKER_METRICS and normal not in MARKER_UNITS[kind]:
        expected = " or ".join(sorted(MARKER_UNITS[kind]))
        out.error((*loc, "units"), f"{units!r} is not a unit of {name} ({expected})")
        return False
    return True


def metric_point(name: str, raw: dict[str, Any], loc: Loc, out: Converted) -> None:
    """One point of an imported metric (see `metric_usable`): a sample or a fitness marker."""
    if (kind := METRICS.get(name)) is not None:
        _sample(raw, kind, loc, out)
    else:
        _marker(raw, name, MARKER_METRICS[name], loc, out)


def skip_array(name: str, entries: int, out: Converted) -> None:
    """A data array other than metrics and workouts (symptoms, ecg, stateOfMind...): counted as skipped."""
    out.skip_type(name, entries, f"{name!r} entries")


def convert(push: HealthAutoExportPush) -> Converted:
    """The samples and workouts of a push; raises 422 naming every malformed field (up to 50)."""
    out = Converted()
    for i, metric in enumerate(push.data.metrics):
        loc: Loc = ("data", "metrics", i)
        if not metric_usable(metric.name, metric.units, len(metric.data), loc, out):
            continue
        for j, raw in enumerate(metric.data):
            metric_point(metric.name, raw, (*loc, "data", j), out)
    for name, series in (push.data.model_extra or {}).items():
        if name not in IMPORTED_ARRAYS and isinstance(series, list):
            skip_array(name, len(series), out)
    for k, workout in enumerate(push.data.workouts):
        _workout(workout, ("data", "workouts", k), out)
    if out.errors:
        raise ProblemError.invalid(out.errors, "Invalid Health Auto Export data")
    return out


def import_push(
    session: Session, user_id: int, push: HealthAutoExportPush, tolerance_s: float
) -> tuple[dict[str, int], list[str], list[dict[str, Any]]]:
    """Store a push (in the caller's transaction); returns the job counts, warnings and skipped types."""
    converted = convert(push)
    added = store_samples(session, user_id, converted.samples)
    added |= store_markers(session, user_id, converted.markers)
    stored = len(converted.samples) + len(converted.markers) + len(converted.workouts)
    counts = {
        "records_read": stored + converted.skipped,
        "heart_rate_read": sum(s.kind == HEART_RATE for s in converted.samples),
        "heart_rate_added": added.get(HEART_RATE, 0),
        "respiratory_rate_read": sum(s.kind == RESPIRATORY_RATE for s in converted.samples),
        "respiratory_rate_added": added.get(RESPIRATORY_RATE, 0),
        **{
            key: value
            for kind in MARKERS
            for key, value in (
                (f"{kind}_read", sum(m.kind == kind for m in converted.markers)),
                (f"{kind}_added", added.get(kind, 0)),
            )
        },
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
    return counts, converted.skips.warnings, converted.skips.as_list()
