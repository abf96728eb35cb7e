"""Vocabulary of the workout protocol (Kumar, Mitra et al., EMBC 2021), shared by models, schemas and trends.

Kept in one place so the database CHECK constraints, the API validation and the trend queries can never
disagree about what an activity, a stage or a pulse point is.
"""

from __future__ import annotations

import enum


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


def stage_of_point(point: PulsePoint | str) -> int:
    """The stage a pulse point belongs to: before_3 and after_3 both describe stage 3."""
    return int(PulsePoint(point).value[-1])


def values(enum_cls: type[enum.Enum]) -> list[str]:
    """The wire/database spelling of every member, in declaration order."""
    return [member.value for member in enum_cls]
