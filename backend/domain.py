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


class NoRateReason(str, enum.Enum):
    """Why a reading has no rate (`rr_bpm` null): the estimator's answers other than a number
    (training/estimator.py, REASONS)."""

    no_breathing = "no_breathing"  # too little of the window sounded like breathing
    too_noisy = "too_noisy"  # breathing heard, but no period the estimator would stand behind


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

# The confidence rule (issue 19), stated once: every stage median (summaries, trends, weekly view, the
# dashboard's workout page) counts only *confident* readings: a rate whose `rr_confidence` is at least
# RR_CONFIDENCE_MIN, or a rate sent without a confidence (clients before issue 19 sent a reading only
# when the estimator gave a rate, and had no confidence to send). A stage with fewer than
# MIN_CONFIDENT_READINGS confident readings has no median: "not enough breathing heard".
# 0.3 is the calibrated estimator's own gate on periodicity (docs/results.md: `min_confidence` 0.3 with
# `min_activity` 0.5, where rr_confidence equals the periodicity), so a rate it answers with its shipped
# settings passes, and a weaker one (another estimator build, a looser setting) does not.
# One confident reading is enough: each is already the estimator's rate over its whole window (30 s of
# a 60 s stage in the package v2; a whole stage for `training.estimate`), and clients that send one
# reading per stage must keep their trends.
RR_CONFIDENCE_MIN = 0.3
MIN_CONFIDENT_READINGS = 1
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


def is_confident(rr_bpm: float | None, rr_confidence: float | None) -> bool:
    """Whether a reading counts toward a stage median: a rate, with no confidence or one of at least
    RR_CONFIDENCE_MIN (see above)."""
    return rr_bpm is not None and (rr_confidence is None or rr_confidence >= RR_CONFIDENCE_MIN)


def stage_of_point(point: PulsePoint | str) -> int:
    """The stage a pulse point belongs to: before_3 and after_3 both describe stage 3."""
    return int(PulsePoint(point).value[-1])


def values(enum_cls: type[enum.Enum]) -> list[str]:
    """The wire/database spelling of every member, in declaration order."""
    return [member.value for member in enum_cls]
