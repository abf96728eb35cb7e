"""Exports of one user's data, streamed (a user with years of samples never sits in memory whole).

    json   everything (workouts, samples, fitness markers, health-app workouts), re-importable:
           backend.imports.json_restore
    csv    one row per record: RR segments and pulse readings (with workout and stage columns), imported
           samples, fitness markers and health-app workouts; times in UTC
    fhir   a FHIR R4 Bundle of Observations: vital signs (vital-signs profiles) and activity
    omh    Open mHealth data points: respiratory-rate, heart-rate, rr-interval (HRV), physical-activity

Every format holds every record type it can (docs/interop.md has the table).
`export_stream(format, session, user_id, now, since)` gives the text chunks and `MEDIA_TYPES[format]`
the answer's type.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sqlalchemy.orm import Session

from backend.exports.schemas import ExportFormat

MEDIA_TYPES = {
    ExportFormat.json: "application/json",
    ExportFormat.csv: "text/csv",
    ExportFormat.fhir: "application/fhir+json",
    ExportFormat.omh: "application/json",
}
EXTENSIONS = {
    ExportFormat.json: "json",
    ExportFormat.csv: "csv",
    ExportFormat.fhir: "json",
    ExportFormat.omh: "json",
}


def export_stream(
    fmt: ExportFormat, session: Session, user_id: int, now: datetime, since: datetime | None = None
) -> Iterator[str]:
    from backend.exports import csv_export, fhir, json_export, omh

    writers = {
        ExportFormat.json: json_export.iter_json,
        ExportFormat.csv: csv_export.iter_csv,
        ExportFormat.fhir: fhir.iter_bundle,
        ExportFormat.omh: omh.iter_data_points,
    }
    return writers[fmt](session, user_id, now, since)
