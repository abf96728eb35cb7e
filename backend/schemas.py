"""Pydantic models of the API's JSON: request validation, response shapes and the OpenAPI schemas.

Bodies are validated strictly (`"14.2"` is not a number, `true` is not an integer) and unknown fields are
rejected, so a typo in a client never silently drops data. Timestamps must carry a UTC offset.
Query and path parameters arrive as text, so their models convert ("5" -> 5) but still reject unknown names.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from backend.domain import (
    PULSE_MAX_BPM,
    PULSE_MIN_BPM,
    RESPIRATION_COUNT_MAX,
    RR_MAX_BPM,
    RR_MIN_BPM,
    SEGMENT_MAX_DURATION_S,
    SEGMENT_MAX_START_S,
    STAGE_DEFAULT_DURATION_S,
    Activity,
    BreathClass,
    Environment,
    NoRateReason,
    PulsePoint,
    implausible_time,
)

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
StageNumber = Annotated[
    int, Field(ge=1, le=4, description="1 before, 2 during, 3 right after, 4 cooling down")
]


def _not_a_number(value: object) -> object:
    """Pydantic reads a number ("2026", "0.5") as Unix time, so `?from=2026` would mean 1970: refuse it."""
    if not isinstance(value, str | bytes | int | float):
        return value  # not text or a number: the date and datetime parsers decide
    try:
        float(value)
    except ValueError:
        return value  # not a number: the date and datetime parsers decide
    raise ValueError("expected a date YYYY-MM-DD or an ISO 8601 instant with its UTC offset, not a number")


# Validation context for models rebuilt from stored rows (answers): what is stored is not re-judged.
STORED = {"stored": True}


def _plausible(moment: datetime, info: ValidationInfo) -> datetime:
    if not (info.context or {}).get("stored") and (problem := implausible_time(moment)):
        raise ValueError(problem)
    return moment


def _representable(value: datetime | date) -> datetime | date:
    """A filter instant must convert to UTC (year 1 at +01:00 cannot): refuse it rather than fail later."""
    if isinstance(value, datetime):
        try:
            value.astimezone(timezone.utc)
        except OverflowError:
            raise ValueError("the instant is out of range once converted to UTC") from None
    return value


# A measurement time: with its UTC offset, and within backend.domain's plausible range.
Instant = Annotated[AwareDatetime, AfterValidator(_plausible)]
# A filter instant (`since`): with its UTC offset (never a number read as Unix time), convertible to UTC;
# any year, since it selects rather than records.
FilterInstant = Annotated[AwareDatetime, BeforeValidator(_not_a_number), AfterValidator(_representable)]

# A calendar day on the workout's own clock (inclusive), or an exact instant with its offset.
DateOrInstant = Annotated[
    AwareDatetime | date,
    Field(union_mode="left_to_right"),
    BeforeValidator(_not_a_number),
    AfterValidator(_representable),
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_character(cls, value: object) -> object:
        """PostgreSQL text cannot hold U+0000 (the insert would fail: a 500); refuse it on every database."""
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain the NUL character (U+0000)")
        return value


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- workouts -----------------------------------------------------------------------------------------


class Segment(Body):
    start_s: float = Field(ge=0, le=SEGMENT_MAX_START_S, description="Seconds from the stage start")
    duration_s: float = Field(gt=0, le=SEGMENT_MAX_DURATION_S)
    rr_bpm: float | None = Field(
        default=None,
        ge=RR_MIN_BPM,
        le=RR_MAX_BPM,
        description="Respiratory rate, breaths per minute; null when the estimator gave none (send `reason`)",
    )
    rr_confidence: Probability | None = Field(
        default=None,
        description="How far the estimator stands behind this reading, 0-1 (its `rr_confidence`); null or"
        " absent: not reported (clients before issue 19), counted as confident",
    )
    reason: NoRateReason | None = Field(
        default=None, description="Why there is no rate; required when `rr_bpm` is null, refused with a rate"
    )
    respiration_count: float | None = Field(default=None, ge=0, le=RESPIRATION_COUNT_MAX)
    breath_class: BreathClass | None = None
    breath_probs: list[Probability] | None = Field(
        default=None, min_length=3, max_length=3, description="P(none), P(normal), P(heavy)"
    )
    noise_prob: Probability | None = None


class Stage(Body):
    stage: StageNumber
    started_at: Instant
    duration_s: float = Field(default=STAGE_DEFAULT_DURATION_S, gt=0, le=3600)
    segments: list[Segment] = Field(default_factory=list, max_length=2000)


class Pulse(Body):
    point: PulsePoint
    bpm: float = Field(ge=PULSE_MIN_BPM, le=PULSE_MAX_BPM)
    measured_at: Instant | None = None


class WorkoutIn(Body):
    started_at: Instant = Field(description="Start on the device's clock; its UTC offset is kept")
    activity: Activity
    environment: Environment
    model_version: str = Field(min_length=1, max_length=100)
    device: str | None = Field(default=None, max_length=100, description="Defaults to the token's label")
    stages: list[Stage] = Field(default_factory=list, max_length=4)
    pulse: list[Pulse] = Field(default_factory=list, max_length=6)


class WorkoutOut(WorkoutIn):
    """The stored workout in the shape it was sent, plus its id and bookkeeping times."""

    id: uuid.UUID
    created_at: datetime
    updated_at: datetime


class WorkoutSummary(BaseModel):
    id: uuid.UUID
    started_at: datetime
    activity: Activity
    environment: Environment
    model_version: str
    device: str | None
    stages: list[int] = Field(description="Stage numbers present")
    updated_at: datetime


class WorkoutPage(BaseModel):
    workouts: list[WorkoutSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class SegmentAppend(Body):
    started_at: Instant | None = Field(default=None, description="Required when the stage is new")
    duration_s: float | None = Field(default=None, gt=0, le=3600)
    segments: list[Segment] = Field(min_length=1, max_length=2000)


class SegmentAppendResult(BaseModel):
    workout_id: uuid.UUID
    stage: int
    appended: int
    segment_count: int = Field(description="Segments in the stage after this append")


class PulseAppend(Body):
    pulse: list[Pulse] = Field(min_length=1, max_length=6)


class PulseAppendResult(BaseModel):
    workout_id: uuid.UUID
    appended: int
    pulse: list[Pulse] = Field(description="Every pulse reading of the workout after this append")


class WorkoutPath(Params):
    workout_id: uuid.UUID


class StagePath(Params):
    workout_id: uuid.UUID
    stage: StageNumber


class WorkoutFilter(Params):
    from_: DateOrInstant | None = Field(
        default=None, alias="from", description="YYYY-MM-DD (workout's local day, inclusive) or an instant"
    )
    to: DateOrInstant | None = Field(
        default=None, description="YYYY-MM-DD (workout's local day, inclusive) or an instant (exclusive)"
    )
    activity: Activity | None = None


class WorkoutListQuery(WorkoutFilter):
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(default=None, max_length=200)


# ---- trends -------------------------------------------------------------------------------------------

TRENDS_MAX_POINTS_DEFAULT = 200  # a year of workouts three or four times a week, one point each


class TrendsQuery(WorkoutFilter):
    """How finely /trends/stages and /trends/rr-vs-pulse send their points (docs/api.md, "Resolution").
    The statistics (box, n, Pearson's r, what was left out) are always over every workout."""

    resolution: Literal["auto", "workout", "week"] = Field(
        default="workout",
        description="`workout` (the default, as before this option): one point per workout; `week`: one "
        "point per ISO week of the workouts' "
        "local dates, the mean of that week's per-workout values; `auto`: `workout` while the filtered "
        "workouts number at most `max_points`, else `week`",
    )
    max_points: int = Field(
        default=TRENDS_MAX_POINTS_DEFAULT,
        ge=1,
        le=100_000,
        description="With resolution=auto: the most workouts sent one point each",
    )


class RrVsPulseQuery(TrendsQuery):
    format: Literal["objects", "columns"] = Field(
        default="objects",
        description="`objects`: `pairs` (or `weeks`) as one object per point; `columns`: `columns`, one "
        "array per field, aligned (`pairs` then empty)",
    )


Resolution = Literal["workout", "week"]


class Distribution(BaseModel):
    """A box plot: quartiles by linear interpolation (Hyndman-Fan type 7), Tukey whiskers (1.5 IQR)."""

    median: float | None
    q1: float | None
    q3: float | None
    whisker_low: float | None
    whisker_high: float | None
    n: int
    points: list[float] = Field(
        description="One value per workout, oldest first; with resolution=week one per ISO week, the mean "
        "of the week's per-workout values"
    )
    workout_ids: list[uuid.UUID] = Field(
        description="The workout of each point, aligned with `points` (empty with resolution=week)"
    )
    weeks: list[date] | None = Field(
        default=None,
        description="resolution=week: the Monday of each point's ISO week, aligned with `points`",
    )
    counts: list[int] | None = Field(
        default=None, description="resolution=week: the workouts averaged into each point"
    )


class RrLeftOut(BaseModel):
    """What the confidence rule kept out of a stage's medians (docs/api.md, "Confidence")."""

    readings_without_rate: int = Field(description="Readings with no rate (`reason` instead)")
    readings_low_confidence: int = Field(description="Rates with `rr_confidence` below the threshold")
    not_enough_heard: int = Field(
        description="Workouts whose stage has readings but too few confident ones: no median, no point"
    )


class StageLeftOut(RrLeftOut):
    stage: int


class StageTrend(BaseModel):
    stage: int
    rr: Distribution = Field(description="Per-workout median RR of the confident readings in this stage")
    pulse: Distribution = Field(description="Per-workout mean pulse at this stage's protocol points")
    rr_left_out: RrLeftOut = Field(description="Over the same workouts: what the confidence rule left out")


class StageTrends(BaseModel):
    resolution: Resolution = Field(default="workout", description="How the points were sent")
    stages: list[StageTrend]


class RrPulsePair(BaseModel):
    workout_id: uuid.UUID
    started_at: datetime
    rr_bpm: float
    pulse_bpm: float


class WeekPair(BaseModel):
    """One ISO week of (median RR, pulse) pairs: the means of the week's per-workout pairs."""

    week_start: date
    n: int = Field(description="Workouts (pairs) in the week")
    rr_bpm: float
    pulse_bpm: float


class StagePairs(BaseModel):
    stage: int
    n: int = Field(description="Per-workout pairs, whatever the resolution")
    pearson_r: float | None = Field(
        description="Over the per-workout pairs; null with fewer than 2 or no variation"
    )
    pairs: list[RrPulsePair] = Field(description="Empty with resolution=week or format=columns")
    weeks: list[WeekPair] | None = Field(default=None, description="resolution=week, format=objects")
    columns: dict[str, list[str | float | int]] | None = Field(
        default=None,
        description="format=columns: the fields of `pairs` (resolution=workout) or of `weeks` "
        "(resolution=week), one aligned array each",
    )


class RrVsPulse(BaseModel):
    resolution: Resolution = Field(default="workout", description="How the pairs were sent")
    stages: list[StagePairs]


class Week(BaseModel):
    week: str = Field(description="ISO week, e.g. 2026-W47")
    week_start: date
    workouts: int
    resting_rr_bpm: float | None = Field(description="Mean of per-workout stage-1 median RR")
    peak_rr_bpm: float | None = Field(description="Mean of per-workout max(stage-2, stage-3 median RR)")
    rr_recovery_bpm: float | None = Field(description="Mean of (stage-3 median RR - stage-4 median RR)")
    hr_recovery_bpm: float | None = Field(description="Mean of (after_3 pulse - after_4 pulse)")
    heavy_share: float | None = Field(description="Heavy segments / segments with a breath class")
    rr_left_out: list[StageLeftOut] = Field(
        default_factory=list, description="Per stage 1-4, what the confidence rule left out of the RR numbers"
    )
    # Fitness markers imported from health apps: weekly means (weeks with markers but no workout appear
    # with workouts = 0). The activity filter does not apply to them.
    resting_hr_bpm: float | None = Field(default=None, description="Mean resting heart rate")
    hrv_sdnn_ms: float | None = Field(default=None, description="Mean heart-rate variability (SDNN)")
    vo2_max_ml_kg_min: float | None = Field(default=None, description="Mean VO2 max, mL/(kg·min)")
    walking_hr_bpm: float | None = Field(default=None, description="Mean walking heart-rate average")


class WeeklyTrends(BaseModel):
    weeks: list[Week]


# ---- service ------------------------------------------------------------------------------------------


class Health(BaseModel):
    status: str


class ProblemFieldError(BaseModel):
    field: str
    in_: str = Field(alias="in")
    detail: str
    pointer: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[ProblemFieldError] | None = None
