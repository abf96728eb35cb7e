"""Pydantic models of the import endpoints: uploads, Health Auto Export's JSON, and the job resource."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict

from backend.schemas import Params

ImportKind = Literal["apple_health", "health_auto_export", "json"]
ImportStatus = Literal["queued", "running", "succeeded", "failed"]


class AppleHealthUpload(BaseModel):
    """multipart/form-data with one file part."""

    file: bytes = Field(
        description="export.zip as the Health app exports it (Profile > Export All Health Data), "
        "or the export.xml inside it"
    )


class SkippedRecords(BaseModel):
    type: str = Field(description='As the file names it: "HKQuantityTypeIdentifierStepCount", "step_count"')
    reason: str
    count: int


class StoredKind(BaseModel):
    kind: str = Field(description="heart_rate, respiratory_rate, a fitness marker, or health_workouts")
    label: str
    read: int
    added: int = Field(description="Newly stored by this import")
    already_stored: int = Field(description="Read but stored before (a re-import, an overlapping sync)")


class ImportJobOut(BaseModel):
    id: uuid.UUID
    url: str = Field(description="Poll this for progress")
    kind: ImportKind
    status: ImportStatus
    filename: str | None
    progress: float | None = Field(description="0-1: share of the file read and stored; null until known")
    bytes_total: int | None = Field(description="Size of the XML (uncompressed), when known")
    bytes_done: int = Field(description="Bytes of XML read and stored so far")
    counts: dict[str, int] = Field(
        description="What was read and stored: records_read (every record counted: the *_read below plus "
        "skipped), heart_rate_read/_added, respiratory_rate_read/_added, resting_heart_rate, hrv_sdnn, "
        "vo2_max and walking_heart_rate_average _read/_added, health_workouts_read/_added, skipped (records "
        "not stored: see `skipped`), "
        "workouts_linked, samples_attached, pulse_filled; JSON imports also workouts_created/_replaced. "
        "*_read minus *_added is what was already stored."
    )
    warnings: list[str] = Field(description="The first skipped records and why")
    skipped: list[SkippedRecords] = Field(
        description="Every record not stored, by type and reason, most frequent first: record types "
        "Respira does not import, unusable values, workout routes and events..."
    )
    stored: list[StoredKind] = Field(
        description="Per kind stored: records read, newly stored, and already stored before (the report "
        "the dashboard shows, from `counts`)"
    )
    error: str | None = Field(description="Why the import failed; records stored before are kept")
    error_line: int | None = Field(description="Line of the export.xml where malformed XML was found")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ImportJobList(BaseModel):
    imports: list[ImportJobOut]


class ImportJobPath(Params):
    job_id: uuid.UUID


class ImportListQuery(Params):
    limit: int = Field(default=20, ge=1, le=100)


# ---- Health Auto Export --------------------------------------------------------------------------------
# The app adds fields across versions and sends dozens of metrics we do not read: unknown fields are
# allowed, and only the metrics we import are checked point by point (backend.imports.health_auto_export).


class _HaeModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class HaeMetric(_HaeModel):
    name: str = Field(
        description="heart_rate, respiratory_rate, resting_heart_rate, heart_rate_variability, vo2_max and "
        "walking_heart_rate_average are imported; other metrics are counted as skipped"
    )
    units: str | None = None
    data: list[dict[str, Any]] = Field(
        default_factory=list,
        description='heart_rate: {"date", "Min", "Avg", "Max", "source"?}; the others: '
        '{"date", "qty", "source"?}; any point may carry its own "end". '
        'Dates: "2024-09-28 16:51:59 +1000" or "2024-09-28 4:51:59 pm +1000".',
    )


class HaeWorkout(_HaeModel):
    id: str | None = None
    name: str | None = Field(default=None, description='e.g. "Outdoor Run"')
    start: str
    end: str
    location: str | None = Field(default=None, description="Indoor or Outdoor")
    heartRateData: list[dict[str, Any]] = Field(  # the app's spelling
        default_factory=list, description='{"date", "Min", "Avg", "Max"} or {"date", "qty"} per point'
    )
    heartRateRecovery: list[dict[str, Any]] = Field(default_factory=list)


class HaeData(_HaeModel):
    metrics: list[HaeMetric] = Field(default_factory=list)
    workouts: list[HaeWorkout] = Field(default_factory=list)


class HealthAutoExportPush(_HaeModel):
    """What the Health Auto Export app's REST API automation sends (JSON format, version 1 or 2)."""

    data: HaeData


# A JSON number: "61" (a string) or true are refused, not coerced; so are NaN and infinities.
HaeNumber = Annotated[float, Strict(), Field(allow_inf_nan=False)]


class HaePoint(_HaeModel):
    date: str
    end: str | None = None  # some points span an interval: kept as the sample's end
    qty: HaeNumber | None = None
    Min: HaeNumber | None = None
    Avg: HaeNumber | None = None
    Max: HaeNumber | None = None
    source: str | None = None
