"""Pydantic models of the exports: the JSON export document (also the body of POST /imports/json), and
loose shapes of the FHIR and Open mHealth answers for the OpenAPI document."""

from __future__ import annotations

import enum
import uuid
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel

from backend.schemas import Body, Instant, Params, WorkoutIn


class ExportFormat(str, enum.Enum):
    json = "json"
    csv = "csv"
    fhir = "fhir"
    omh = "omh"


class ExportQuery(Params):
    format: ExportFormat = Field(
        default=ExportFormat.json,
        description="json: everything, re-importable; csv: segments and pulse readings; fhir: an R4 "
        "Bundle of vital-signs Observations; omh: Open mHealth respiratory-rate data points",
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
    user: ExportUser = Field(description="Informative: an import goes to the caller, whatever the name")
    workouts: list[ExportedWorkout] = Field(default_factory=list)
    health_samples: list[ExportedSample] = Field(default_factory=list)
    health_workouts: list[ExportedHealthWorkout] = Field(default_factory=list)


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
