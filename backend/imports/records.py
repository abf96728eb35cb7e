"""What imports produce, and how it is stored so that importing the same data twice adds nothing.

Every importer turns its input into `SampleIn`, `MarkerIn` and `HealthWorkoutIn` values;
`store_samples`, `store_markers` and `store_health_workouts` insert them with INSERT ... ON CONFLICT DO
NOTHING against the unique (user, kind, start, source) and (user, start, source) constraints, and report
how many rows were new. So a re-imported file, an overlapping Health Auto Export sync or two imports at
once never duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.orm import Session

from backend.db import insert_ignoring_duplicates, table_of, utcnow
from backend.domain import PULSE_MAX_BPM, PULSE_MIN_BPM, RR_MAX_BPM
from backend.models import FitnessMarker, HealthSample, HealthWorkout

HEART_RATE = "heart_rate"
RESPIRATORY_RATE = "respiratory_rate"
SOURCE_MAX_CHARS = 200
# Rows per INSERT statement. psycopg parses each statement's placeholders in Python, ~7 kB per row, so
# pages of 1000 (SQLAlchemy's default) would make a 7 MB peak on PostgreSQL; 250 keeps it under 2 MB.
# 80 since rows carry their stored time (`created_at`): 11 parameters a row, under 1000 a statement.
INSERT_PAGE_ROWS = 80

RESTING_HEART_RATE = "resting_heart_rate"
HRV_SDNN = "hrv_sdnn"
VO2_MAX = "vo2_max"
WALKING_HEART_RATE = "walking_heart_rate_average"


@dataclass(frozen=True)
class Marker:
    """A fitness marker kind: what it is called, its one stored unit and the values it can take."""

    label: str
    unit: str  # as written in exports (CSV `unit`, JSON); UCUM spelling in `ucum`
    ucum: str
    low: float  # plausible range, inclusive
    high: float


# Heart rates share the API's pulse range; HRV SDNN and VO2 max ranges hold any adult's values
# (Apple Watch reports VO2 max of about 14-65 and SDNN of a few ms to ~200 ms).
MARKERS: dict[str, Marker] = {
    RESTING_HEART_RATE: Marker("Resting heart rate", "beats/min", "/min", PULSE_MIN_BPM, PULSE_MAX_BPM),
    HRV_SDNN: Marker("Heart-rate variability (SDNN)", "ms", "ms", 1.0, 1000.0),
    VO2_MAX: Marker("VO2 max", "mL/(kg·min)", "mL/kg/min", 5.0, 100.0),
    WALKING_HEART_RATE: Marker(
        "Walking heart-rate average", "beats/min", "/min", PULSE_MIN_BPM, PULSE_MAX_BPM
    ),
}


@dataclass(frozen=True, slots=True)
class SampleIn:
    kind: str  # HEART_RATE or RESPIRATORY_RATE
    started_at: datetime
    ended_at: datetime
    bpm: float  # per minute: beats, or breaths
    source: str
    bpm_min: float | None = None
    bpm_max: float | None = None


@dataclass(frozen=True, slots=True)
class HealthWorkoutIn:
    source: str
    activity_type: str
    started_at: datetime
    ended_at: datetime
    indoor: bool | None = None
    hr_avg_bpm: float | None = None
    hr_min_bpm: float | None = None
    hr_max_bpm: float | None = None


@dataclass(frozen=True, slots=True)
class MarkerIn:
    kind: str  # a key of MARKERS
    started_at: datetime
    ended_at: datetime
    value: float  # in MARKERS[kind].unit
    source: str
    local_date: date  # the day on the recording app's clock


def local_day(moment: datetime) -> date:
    """The calendar day of a parsed health-app date, on its own clock (the offset it was written with)."""
    return moment.date()


def marker_problem(kind: str, value: float) -> str | None:
    """Why a value cannot be a marker of this kind (None when it can)."""
    marker = MARKERS[kind]
    if value != value:  # NaN
        return "the value is not a number"
    if not marker.low <= value <= marker.high:
        return f"{marker.label.lower()} {value:g} {marker.unit} is outside {marker.low:g}-{marker.high:g}"
    return None


def sample_problem(kind: str, bpm: float) -> str | None:
    """Why a value cannot be a sample of this kind (None when it can).

    Heart rate must lie in the range the API accepts for pulse (25-250 /min), so that any sample can fill a
    protocol pulse point; respiratory rate in (0, 80] breaths/min, as RR estimates.
    """
    if bpm != bpm:  # NaN
        return "the value is not a number"
    if kind == HEART_RATE and not PULSE_MIN_BPM <= bpm <= PULSE_MAX_BPM:
        return f"heart rate {bpm:g}/min is outside {PULSE_MIN_BPM:g}-{PULSE_MAX_BPM:g}"
    if kind == RESPIRATORY_RATE and not 0 < bpm <= RR_MAX_BPM:
        return f"respiratory rate {bpm:g}/min is outside 0-{RR_MAX_BPM:g}"
    return None


def clean_source(name: str | None, default: str, max_chars: int = SOURCE_MAX_CHARS) -> str:
    """A name for the source column: trimmed, without NUL (PostgreSQL text cannot hold it), never empty."""
    name = (name or "").replace("\x00", "").strip()
    return (name or default)[:max_chars]


def _insert_new(session: Session, table: Table, rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    statement = (
        insert_ignoring_duplicates(session, table)
        .returning(table.c.id)
        .execution_options(insertmanyvalues_page_size=INSERT_PAGE_ROWS)
    )
    # RETURNING yields only the rows that were inserted: that is the count of new ones.
    return len(session.execute(statement, rows).all())


def store_samples(
    session: Session,
    user_id: int,
    samples: Sequence[SampleIn],
    workout_ids: Sequence[int | None] | None = None,
) -> dict[str, int]:
    """Insert samples not stored yet; returns new rows per kind. `workout_ids` (aligned) links them."""
    stored_at = utcnow()  # one value for the batch: no per-row default to evaluate
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for i, s in enumerate(samples):
        by_kind.setdefault(s.kind, []).append(
            {
                "user_id": user_id,
                "kind": s.kind,
                "started_at": s.started_at,
                "ended_at": s.ended_at,
                "bpm": s.bpm,
                "bpm_min": s.bpm_min,
                "bpm_max": s.bpm_max,
                "source": s.source,
                "workout_id": workout_ids[i] if workout_ids is not None else None,
                "created_at": stored_at,
            }
        )
    table = table_of(HealthSample)
    return {kind: _insert_new(session, table, rows) for kind, rows in by_kind.items()}


def store_markers(session: Session, user_id: int, markers: Sequence[MarkerIn]) -> dict[str, int]:
    """Insert fitness markers not stored yet; returns new rows per kind."""
    stored_at = utcnow()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for m in markers:
        by_kind.setdefault(m.kind, []).append(
            {
                "user_id": user_id,
                "kind": m.kind,
                "started_at": m.started_at,
                "ended_at": m.ended_at,
                "local_date": m.local_date,
                "value": m.value,
                "source": m.source,
                "created_at": stored_at,
            }
        )
    table = table_of(FitnessMarker)
    return {kind: _insert_new(session, table, rows) for kind, rows in by_kind.items()}


def store_health_workouts(
    session: Session,
    user_id: int,
    workouts: Sequence[HealthWorkoutIn],
    workout_ids: Sequence[int | None] | None = None,
) -> int:
    """Insert health-app workouts not stored yet; returns how many were new."""
    stored_at = utcnow()
    rows = [
        {
            "user_id": user_id,
            "source": w.source,
            "activity_type": w.activity_type,
            "started_at": w.started_at,
            "ended_at": w.ended_at,
            "indoor": w.indoor,
            "hr_avg_bpm": w.hr_avg_bpm,
            "hr_min_bpm": w.hr_min_bpm,
            "hr_max_bpm": w.hr_max_bpm,
            "workout_id": workout_ids[i] if workout_ids is not None else None,
            "created_at": stored_at,
        }
        for i, w in enumerate(workouts)
    ]
    return _insert_new(session, table_of(HealthWorkout), rows)
