"""Vocabulary of the workout protocol (Kumar, Mitra et al., EMBC 2021), shared by models, schemas and trends.

Kept in one place so the database CHECK constraints, the API validation and the trend queries can never
disagree about what an activity, a stage or a pulse point is.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta, timezone


class Activity(str, enum.Enum):
    running = "running"
    biking = "biking"
    hiit = "hiit"
    calisthenics = "calisthenics"
    fast_walking = "fast_walking"
    incline_walking = "incline_walking"
    other = "other"


class Environment(str, enum.Enum):
    indoor = "indoor"
    outdoor = "outdoor"


class BreathClass(str, enum.Enum):
    none = "none"
    normal = "normal"
    heavy = "heavy"


class PulsePoint(str, enum.Enum):
    """Where in the protocol the Apple Watch pulse was read; the digit is the stage it belongs to."""

    before_1 = "before_1"
    before_2 = "before_2"
    before_3 = "before_3"
    after_3 = "after_3"
    before_4 = "before_4"
    after_4 = "after_4"


STAGES: tuple[int, ...] = (1, 2, 3, 4)
"""1 before exercise, 2 during (near the end), 3 immediately after, 4 cooling down."""

STAGE_DEFAULT_DURATION_S = 60.0
"""Each protocol stage is a one-minute recording unless the client says otherwise."""

RR_MIN_BPM, RR_MAX_BPM = 0.0, 80.0
PULSE_MIN_BPM, PULSE_MAX_BPM = 25.0, 250.0
SEGMENT_MAX_DURATION_S = 3600.0
SEGMENT_MAX_START_S = 24 * 3600.0  # seconds from the stage start: a stage is a minute, never a day
RESPIRATION_COUNT_MAX = RR_MAX_BPM * SEGMENT_MAX_DURATION_S / 60  # the most breaths a segment can hold

# Plausible measurement times, for every entry point (REST, JSON restore, Health Auto Export, Apple
# Health): nothing Respira stores was measured before 2000 (no Apple Watch, no AirPods), and nothing in
# the future beyond a day of clock skew. Years 1 or 9999 with an offset would also overflow when
# converted to UTC (a 500); refusing them here, before any arithmetic, closes that too.
EARLIEST_MEASUREMENT = datetime(2000, 1, 1, tzinfo=timezone.utc)
FUTURE_SKEW = timedelta(days=1)


def implausible_time(moment: datetime, now: datetime | None = None) -> str | None:
    """Why `moment` (an aware datetime) cannot be a measurement time; None when it can."""
    latest = (now or datetime.now(timezone.utc)) + FUTURE_SKEW
    if moment < EARLIEST_MEASUREMENT or moment > latest:
        return (
            f"{moment.isoformat()} is outside the plausible range {EARLIEST_MEASUREMENT.date().isoformat()}"
            " to now + 1 day"
        )
    return None


def stage_of_point(point: PulsePoint | str) -> int:
    """The stage a pulse point belongs to: before_3 and after_3 both describe stage 3."""
    return int(PulsePoint(point).value[-1])


def values(enum_cls: type[enum.Enum]) -> list[str]:
    """The wire/database spelling of every member, in declaration order."""
    return [member.value for member in enum_cls]
