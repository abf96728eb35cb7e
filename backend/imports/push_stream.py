"""Large Health Auto Export pushes, read as a stream from a file in bounded memory, in a job.

A push parsed whole (pydantic over the body) costs about twenty times its size in memory: 1.3 GB for a
64 MB body. So pushes above IMPORT_PUSH_INLINE_MAX_BYTES are spooled to disk by the endpoint and
imported here, with ijson (yajl, C) reading one point at a time:

1. `scan`: the structure (what the schema says: objects where objects belong, arrays where arrays do),
   the name and units of each metric, which JSON may place after the metric's data, and how many
   entries the data arrays Respira does not import hold (counted as skipped, as inline).
2. `_convert(store=False)`: every point and workout is checked exactly as an inline push is
   (backend.imports.health_auto_export); any malformed field fails the job, naming it, and nothing is
   stored: the same promise as the inline push.
3. `_convert(store=True)`: the same walk again, storing batches of IMPORT_BATCH_SIZE samples, each in its
   own transaction; duplicates are skipped as always, so re-sending a push that failed midway completes
   it. Then workouts are matched, as after every import.

Memory holds one batch, and one workout (at most MAX_WORKOUT_VALUES JSON values, routes included).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import ijson
from pydantic import ValidationError

from backend.db import Database, utcnow
from backend.imports.health_auto_export import (
    IMPORTED_ARRAYS,
    Converted,
    _workout,
    metric_point,
    metric_usable,
    skip_array,
)
from backend.imports.jobs import (  # the job mechanics of Apple Health imports, shared
    COUNT_KEYS,
    ImportSettings,
    JobGone,
    _set_status,
    load_job,
    record_crash,
    this_worker,
)
from backend.imports.matching import match_workouts
from backend.imports.records import store_health_workouts, store_markers, store_samples
from backend.imports.report import SkipTally
from backend.imports.schemas import HaeWorkout
from backend.models import ImportJob
from backend.problems import FieldError, field_errors

log = logging.getLogger("respira.imports")

METRIC = "data.metrics.item"
POINT = "data.metrics.item.data.item"
WORKOUT = "data.workouts.item"
METRIC_FIELDS = frozenset({f"{METRIC}.name", f"{METRIC}.units", METRIC})  # what scan reads of a metric
WORKOUT_POINT_LISTS = ("heartRateData", "heartRateRecovery")
MAX_WORKOUT_POINTS = 100_000  # heart-rate points of one workout: 69 days at one a minute
MAX_WORKOUT_VALUES = 1_000_000  # JSON values in one workout (routes included): it is built whole
# Where the schema wants an object or an array.
CONTAINERS = {
    "": "start_map",
    "data": "start_map",
    "data.metrics": "start_array",
    METRIC: "start_map",
    "data.metrics.item.data": "start_array",
    POINT: "start_map",
    "data.workouts": "start_array",
    WORKOUT: "start_map",
    **{f"{WORKOUT}.{name}": "start_array" for name in WORKOUT_POINT_LISTS},
    **{f"{WORKOUT}.{name}.item": "start_map" for name in WORKOUT_POINT_LISTS},
}
VALUE_STARTS = ("start_map", "start_array", "string", "number", "boolean", "null")
KIND_NAMES = {"start_map": "an object", "start_array": "an array"}
IMPORTED_PREFIXES = tuple(f"data.{name}." for name in IMPORTED_ARRAYS)


class PushInvalid(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(f"{errors[0].field}: {errors[0].detail}")
        self.errors = errors


def _loc(prefix: str, indices: dict[str, int]) -> tuple[str | int, ...]:
    """('data', 'metrics', 2, 'data', 7) from 'data.metrics.item.data.item' and the current indices."""
    loc: list[str | int] = []
    path = ""
    for part in prefix.split(".") if prefix else []:
        path = f"{path}.{part}" if path else part
        loc.append(indices.get(path, 0) if part == "item" else part)
    return tuple(loc)


@dataclass
class Scan:
    """What the first pass learns: each metric's name and units, by index."""

    names: dict[int, str] = field(default_factory=dict)
    units: dict[int, str | None] = field(default_factory=dict)
    points: dict[int, int] = field(default_factory=dict)  # metric index -> its points, in file order
    workouts: int = 0
    other_arrays: dict[str, int] = field(default_factory=dict)  # data.<name> not imported -> its entries


def _events(file: IO[bytes]) -> Iterator[tuple[str, str, Any, dict[str, int]]]:
    """ijson's events with the index of every array item on the way (prefix of the item -> index)."""
    indices: dict[str, int] = {}
    for prefix, event, value in ijson.parse(file, use_float=True):
        if prefix.endswith("item") and event in VALUE_STARTS:
            indices[prefix] = indices.get(prefix, -1) + 1
        if event == "start_array":
            indices.pop(f"{prefix}.item" if prefix else "item", None)
        yield prefix, event, value, indices


def scan(path: Path) -> Scan:
    """Pass 1: check the structure and read the metrics' names; raises PushInvalid."""
    out = Scan()
    seen: set[tuple[str | int, ...]] = set()  # containers met: a key given twice is refused
    workout_values = 0
    with open(path, "rb") as file:
        try:
            for prefix, event, value, indices in _events(file):
                want = CONTAINERS.get(prefix)
                if want is not None and event not in ("end_map", "end_array", "map_key"):
                    _check_container(prefix, event, want, indices, seen)
                if prefix == POINT and event == "start_map":
                    metric = indices[METRIC]
                    out.points[metric] = out.points.get(metric, 0) + 1
                elif prefix == WORKOUT and event == "start_map":
                    out.workouts, workout_values = out.workouts + 1, 0
                if prefix.startswith(WORKOUT):
                    workout_values += 1
                    if workout_values > MAX_WORKOUT_VALUES:
                        loc = _loc(WORKOUT, indices)
                        raise PushInvalid([FieldError(loc, f"holds more than {MAX_WORKOUT_VALUES:,} values")])
                _count_other_arrays(out, prefix, event)
                if prefix in METRIC_FIELDS:
                    _read_metric_field(out, prefix, event, value, indices)
        except ijson.JSONError as exc:
            raise PushInvalid([FieldError((), f"not valid JSON: {exc}")]) from None
    if ("data",) not in seen:
        raise PushInvalid([FieldError(("data",), "Field required")])
    return out


def _check_container(
    prefix: str, event: str, want: str, indices: dict[str, int], seen: set[tuple[str | int, ...]]
) -> None:
    """A container (object or array) of the expected kind, not given twice; raises PushInvalid."""
    loc = _loc(prefix, indices)
    if event != want:
        raise PushInvalid([FieldError(loc, f"must be {KIND_NAMES[want]}")])
    if not prefix.endswith("item"):  # (array items cannot repeat; and are many)
        if loc in seen:
            raise PushInvalid([FieldError(loc, "is given twice")])
        seen.add(loc)


def _read_metric_field(out: Scan, prefix: str, event: str, value: Any, indices: dict[str, int]) -> None:
    """A metric's name (required, a string) or units (a string or null); raises PushInvalid."""
    if prefix == f"{METRIC}.name":
        if event != "string":
            raise PushInvalid([FieldError(_loc(prefix, indices), "must be a string")])
        out.names[indices[METRIC]] = value
    elif prefix == f"{METRIC}.units":
        if event not in ("string", "null"):
            raise PushInvalid([FieldError(_loc(prefix, indices), "must be a string or null")])
        out.units[indices[METRIC]] = value
    elif event == "end_map" and indices[METRIC] not in out.names:
        raise PushInvalid([FieldError((*_loc(METRIC, indices), "name"), "Field required")])


def _count_other_arrays(out: Scan, prefix: str, event: str) -> None:
    """Entries of `data.<name>` arrays other than metrics and workouts (a name given twice: the last)."""
    if not prefix.startswith("data.") or prefix.startswith(IMPORTED_PREFIXES):
        return  # (nearly every event: a quick test first)
    parts = prefix.split(".")
    if parts[1] in IMPORTED_ARRAYS:
        return
    if len(parts) == 2 and event == "start_array":
        out.other_arrays[parts[1]] = 0
    elif len(parts) == 3 and parts[2] == "item" and event in VALUE_STARTS and parts[1] in out.other_arrays:
        out.other_arrays[parts[1]] += 1


@dataclass
class _Totals:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    skips: SkipTally = field(default_factory=SkipTally)
    errors: list[FieldError] = field(default_factory=list)
    first_at: datetime | None = None
    last_at: datetime | None = None

    def take(self, out: Converted) -> None:
        """Count what `out` converted (then it is emptied; its skips are counted by `finish`)."""
        self.counts["records_read"] += len(out.samples) + len(out.markers) + len(out.workouts)
        self.counts["health_workouts_read"] += len(out.workouts)
        for kind in [s.kind for s in out.samples] + [m.kind for m in out.markers]:
            self.counts[f"{kind}_read"] += 1
        moments = [s.started_at for s in out.samples]  # (markers belong to no workout: not matched)
        moments += [t for w in out.workouts for t in (w.started_at, w.ended_at)]
        if moments:
            low, high = min(moments), max(moments)
            self.first_at = low if self.first_at is None else min(self.first_at, low)
            self.last_at = high if self.last_at is None else max(self.last_at, high)
        self.errors.extend(out.errors[: 50 - len(self.errors)])
        out.samples, out.markers, out.workouts, out.errors = [], [], [], []

    def finish(self, out: Converted) -> None:
        """The skipped records of the whole pass, by type and reason (`out` kept them all along)."""
        self.skips = out.skips
        self.counts["skipped"] = out.skipped
        self.counts["records_read"] += out.skipped


def _convert(path: Path, found: Scan, db: Database | None, user_id: int, batch_size: int) -> _Totals:
    """Pass 2 (`db` None: check only) or pass 3 (store in batches of `batch_size`).

    Points and workouts are built by ijson's C code one at a time (`ijson.items`); the scan said how
    many points each metric has, in file order, so each point's metric is known by counting.
    """
    totals, out = _Totals(), Converted()

    def flush(force: bool = False) -> None:
        if not force and len(out.samples) + len(out.markers) + len(out.workouts) < batch_size:
            return
        if db is not None:
            with db.session(write=True) as session, session.begin():
                added = store_samples(session, user_id, out.samples)
                added |= store_markers(session, user_id, out.markers)
                for kind, new in added.items():
                    totals.counts[f"{kind}_added"] += new
                totals.counts["health_workouts_added"] += store_health_workouts(
                    session, user_id, out.workouts
                )
        totals.take(out)

    with open(path, "rb") as file:
        points = ijson.items(file, POINT, use_float=True)
        for metric in sorted(found.names.keys() | found.points.keys()):
            name, count = found.names.get(metric, ""), found.points.get(metric, 0)
            loc = ("data", "metrics", metric)
            usable = metric_usable(name, found.units.get(metric), count, loc, out)
            for j in range(count):
                raw = next(points)
                if usable:
                    metric_point(name, raw, (*loc, "data", j), out)
                    flush()
    for name, entries in found.other_arrays.items():
        skip_array(name, entries, out)
    if found.workouts:
        with open(path, "rb") as file:
            for k, raw in enumerate(ijson.items(file, WORKOUT, use_float=True)):
                _workout_value(raw, ("data", "workouts", k), out)
                flush()
    flush(force=True)
    totals.finish(out)
    return totals


def _workout_value(raw: dict[str, Any], loc: tuple[str | int, ...], out: Converted) -> None:
    if sum(len(raw.get(name) or []) for name in WORKOUT_POINT_LISTS) > MAX_WORKOUT_POINTS:
        out.error(loc, f"a workout may hold at most {MAX_WORKOUT_POINTS:,} heart-rate points")
        return
    try:
        workout = HaeWorkout.model_validate(raw)
    except ValidationError as exc:
        for err in field_errors(exc, "body"):
            out.error((*loc, *err.loc), err.detail)
        return
    _workout(workout, loc, out)


def import_push_file(
    db: Database, user_id: int, path: Path, settings: ImportSettings
) -> tuple[dict[str, int], list[str], list[dict[str, Any]]]:
    """Check the whole push, then store it batch by batch; raises PushInvalid naming its errors.
    Returns what `health_auto_export.import_push` returns: counts, warnings and skipped types."""
    found = scan(path)
    checked = _convert(path, found, None, user_id, settings.batch_size)
    if checked.errors:
        raise PushInvalid(checked.errors)
    stored = _convert(path, found, db, user_id, settings.batch_size)
    counts = dict(stored.counts)
    if stored.first_at is not None and stored.last_at is not None:
        with db.session(write=True) as session, session.begin():
            matched = match_workouts(
                session, user_id, stored.first_at, stored.last_at, settings.pulse_tolerance_s
            )
        counts |= matched.as_dict()
    else:
        counts |= {"workouts_linked": 0, "samples_attached": 0, "pulse_filled": 0}
    return counts, list(stored.skips.warnings), stored.skips.as_list()


def run_push_job(
    db: Database, job_id: int, path: Path, settings: ImportSettings, *, delete_file: bool = False
) -> ImportJob | None:
    """The job runner for a spooled push (same shape as jobs.run_apple_health_job); never raises."""
    try:
        job = load_job(db, job_id)
        if job is None:
            raise JobGone(job_id)
        _set_status(db, job_id, status="running", started_at=utcnow(), worker=this_worker())
        try:
            counts, warnings, skipped = import_push_file(db, job.user_id, path, settings)
        except PushInvalid as exc:
            detail = "; ".join(f"{e.field}: {e.detail}" for e in exc.errors[:10])
            more = f" (and {len(exc.errors) - 10} more)" if len(exc.errors) > 10 else ""
            _set_status(
                db,
                job_id,
                status="failed",
                error=f"invalid Health Auto Export data, nothing stored: {detail}{more}"[:4000],
                error_type="invalid",
                finished_at=utcnow(),
            )
            return load_job(db, job_id)
        _set_status(
            db,
            job_id,
            status="succeeded",
            counts=counts,
            warnings=warnings,
            skipped=skipped,
            finished_at=utcnow(),
        )
        return load_job(db, job_id)
    except JobGone:
        log.info("import job %s vanished (account deleted?); stopped", job_id)
        return None
    except Exception:
        log.exception("push import job %s crashed", job_id)
        record_crash(db, job_id)
        return load_job(db, job_id)
    finally:
        if delete_file:
            path.unlink(missing_ok=True)
