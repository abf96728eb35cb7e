"""Pydantic models of the exports: the JSON export document (also the body of POST /imports/json), and
loose shapes of the FHIR and Open mHealth answers for the OpenAPI document."""

from __future__ import annotations

import enum
import uuid
from datetime import date
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel

from backend.schemas import Body, FilterInstant, Instant, Params, WorkoutIn


class ExportFormat(str, enum.Enum):
    json = "json"
    csv = "csv"
    fhir = "fhir"
    omh = "omh"


class ExportJobOut(BaseModel):
    id: uuid.UUID
    url: str = Field(description="Poll this until `status` is succeeded or failed")
    file_url: str | None = Field(description="Download the export here once it has succeeded")
    format: ExportFormat
    since: AwareDatetime | None
    status: Literal["queued", "running", "succeeded", "failed"]
    bytes: int | None = Field(description="Size of the file written")
    error: str | None
    created_at: AwareDatetime
    started_at: AwareDatetime | None
    finished_at: AwareDatetime | None


class ExportJobPath(Params):
    job_id: uuid.UUID


class ExportQuery(Params):
    format: ExportFormat = Field(
        default=ExportFormat.json,
        description="json: everything, re-importable; csv: one row per record (segments, pulse readings, "
        "imported samples, fitness markers and workouts), times in UTC; fhir: an R4 Bundle of Observations "
        "(vital-signs profile where one applies); omh: Open mHealth data points (respiratory-rate, "
        "heart-rate, rr-interval, physical-activity)",
    )
    since: FilterInstant | None = Field(
        default=None,
        description="Incremental export: only workouts changed and records stored at or after this instant "
        "(ISO 8601 with an offset). Deletions are not reported; a full export shows them.",
    )


class SampleKind(str, enum.Enum):
    heart_rate = "heart_rate"
    respiratory_rate = "respiratory_rate"


class ExportedWorkout(WorkoutIn):
    id: uuid.UUID


class ExportedSample(Body):
    kind: SampleKind
    started_at: Instant
    ended_at: Instant
    bpm: float = Field(gt=0, le=300, description="Per minute: beats (heart rate) or breaths")
    bpm_min: float | None = Field(default=None, gt=0, le=300)
    bpm_max: float | None = Field(default=None, gt=0, le=300)
    source: str = Field(min_length=1, max_length=200)
    workout_id: uuid.UUID | None = Field(default=None, description="The workout it was recorded during")


class MarkerKind(str, enum.Enum):
    resting_heart_rate = "resting_heart_rate"
    hrv_sdnn = "hrv_sdnn"
    vo2_max = "vo2_max"
    walking_heart_rate_average = "walking_heart_rate_average"


class ExportedMarker(Body):
    kind: MarkerKind
    started_at: Instant
    ended_at: Instant
    local_date: date = Field(description="The day on the clock of the app that recorded it")
    value: float = Field(
        gt=0,
        description="In the kind's unit: beats/min (resting_heart_rate, walking_heart_rate_average), "
        "ms (hrv_sdnn), mL/(kg·min) (vo2_max)",
    )
    source: str = Field(min_length=1, max_length=200)


class ExportedHealthWorkout(Body):
    source: str = Field(min_length=1, max_length=200)
    activity_type: str = Field(min_length=1, max_length=100)
    started_at: Instant
    ended_at: Instant
    indoor: bool | None = None
    hr_avg_bpm: float | None = Field(default=None, gt=0, le=300)
    hr_min_bpm: float | None = Field(default=None, gt=0, le=300)
    hr_max_bpm: float | None = Field(default=None, gt=0, le=300)
    workout_id: uuid.UUID | None = Field(default=None, description="The workout it overlaps")


class ExportUser(Body):
    name: str = Field(min_length=1, max_length=80)


class RespiraExport(Body):
    """Everything of one user. POST it to /api/v1/imports/json (any user) to restore it."""

    format: Literal["respira-export"]
    version: Literal[1]
    exported_at: AwareDatetime
    since: AwareDatetime | None = Field(
        default=None, description="An incremental export: only what was stored or changed since then"
    )
    user: ExportUser = Field(description="Informative: an import goes to the caller, whatever the name")
    workouts: list[ExportedWorkout] = Field(default_factory=list)
    health_samples: list[ExportedSample] = Field(default_factory=list)
    health_workouts: list[ExportedHealthWorkout] = Field(default_factory=list)
    fitness_markers: list[ExportedMarker] = Field(default_factory=list)


class OmhDataPoint(BaseModel):
    """An Open mHealth data point (omh:respiratory-rate:2.0 body)."""

    header: dict[str, Any]
    body: dict[str, Any]


class JsonExport(RootModel[RespiraExport | list[OmhDataPoint]]):
    """format=json: the RespiraExport document; format=omh: a list of Open mHealth data points."""


class FhirBundle(BaseModel):
    """A FHIR R4 Bundle (type collection) of a Patient and vital-signs Observations."""

    model_config = ConfigDict(extra="allow")

    resourceType: Literal["Bundle"]  # FHIR's spelling
    type: Literal["collection"]
    entry: list[dict[str, Any]]
