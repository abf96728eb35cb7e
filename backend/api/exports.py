"""GET /api/v1/export?format=json|csv|fhir|omh: the caller's data, streamed (see backend.exports)."""

from __future__ import annotations

from flask import Blueprint, Response, stream_with_context

from backend.api.auth import current_principal
from backend.api.openapi import operation
from backend.db import get_session, utcnow
from backend.exports import EXTENSIONS, MEDIA_TYPES, export_stream
from backend.exports.schemas import ExportQuery, FhirBundle, JsonExport

bp = Blueprint("exports", __name__)


@bp.get("/export")
@operation(
    "Export all of the caller's data",
    description="json: workouts, heart-rate and respiratory-rate samples, fitness markers and health-app "
    "workouts; POST it to /api/v1/imports/json to restore it into any account. csv: one row per record "
    "(segments, pulse readings, samples, markers, health-app workouts), times in UTC. fhir: a FHIR R4 "
    "Bundle of Observations (vital-signs profiles: LOINC 9279-1 respiratory rate, 8867-4 heart rate, "
    "40443-4 resting heart rate, 80404-7 HRV SDNN; activity: VO2 max, workouts). omh: Open mHealth "
    "respiratory-rate 2.0, heart-rate 2.0, rr-interval 1.0 (HRV SDNN) and physical-activity 1.2 data "
    "points. `since` makes any of them incremental. See docs/interop.md.",
    tags=("exports",),
    query=ExportQuery,
    responses={
        200: (
            "The export (json and omh: application/json)",
            {"application/json": JsonExport, "text/csv": None, "application/fhir+json": FhirBundle},
        )
    },
)
def export(query: ExportQuery) -> Response:
    now = utcnow()
    chunks = export_stream(query.format, get_session(), current_principal().user_id, now, query.since)
    filename = f"respira-export-{now:%Y%m%d}-{query.format.value}.{EXTENSIONS[query.format]}"
    mimetype = MEDIA_TYPES[query.format]
    return Response(
        stream_with_context(chunks),
        mimetype=mimetype,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
