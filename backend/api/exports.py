"""The caller's data: GET /api/v1/export?format=json|csv|fhir|omh streams it (see backend.exports);
POST /api/v1/exports writes it to a file in the background (a queue worker, or a thread of the web
process; backend.exports.jobs), for accounts too large to stream within one request."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, send_file, stream_with_context, url_for
from sqlalchemy import select

from backend import tasks
from backend.api.auth import current_principal
from backend.api.openapi import operation
from backend.background import app_object
from backend.db import get_db, get_session, utcnow
from backend.exports import EXTENSIONS, MEDIA_TYPES, export_stream
from backend.exports import jobs as export_jobs
from backend.exports.schemas import (
    ExportFormat,
    ExportJobOut,
    ExportJobPath,
    ExportQuery,
    FhirBundle,
    JsonExport,
)
from backend.models import ExportJob
from backend.problems import ProblemError

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


def job_json(job: ExportJob) -> dict[str, Any]:
    url = url_for("api.exports.get_export_job", job_id=str(job.uuid))
    out = ExportJobOut(
        id=job.uuid,
        url=url,
        file_url=f"{url}/file" if job.status == "succeeded" else None,
        format=ExportFormat(job.format),
        since=job.since,
        status=job.status,  # type: ignore[arg-type]  # a str column; pydantic checks the value
        bytes=job.bytes_written,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )
    return out.model_dump(mode="json")


@bp.post("/exports")
@operation(
    "Write an export to a file in the background",
    description="The same export as GET /api/v1/export (same `format` and `since`), written by a background "
    "worker, for accounts too large to stream within one request. Answers 202 with the job: poll `url` "
    "until `status` is succeeded, then download `file_url`. The file is kept until the account is deleted.",
    tags=("exports",),
    query=ExportQuery,
    responses={202: ("The export job", ExportJobOut)},
)
def create_export_job(query: ExportQuery) -> tuple[dict[str, Any], int, dict[str, str]]:
    job = export_jobs.create_job(get_db(), current_principal().user_id, query.format, query.since)
    tasks.submit_export(app_object(), job)
    body = job_json(job)
    return body, 202, {"Location": body["url"]}


def _job_of_caller(job_id: Any) -> ExportJob:
    job = (
        get_session()
        .scalars(
            select(ExportJob).where(
                ExportJob.uuid == job_id, ExportJob.user_id == current_principal().user_id
            )
        )
        .one_or_none()
    )
    if job is None:
        raise ProblemError(404, "Not Found", f"No export {job_id} for this user.")
    return job


@bp.get("/exports/<job_id>")
@operation(
    "Progress of a background export",
    description="`status` queued, running, then succeeded (download `file_url`) or failed (`error`).",
    tags=("exports",),
    path=ExportJobPath,
    responses={200: ("The export job", ExportJobOut)},
)
def get_export_job(path: ExportJobPath) -> dict[str, Any]:
    job = _job_of_caller(path.job_id)
    return job_json(tasks.check_export(app_object(), job))


@bp.get("/exports/<job_id>/file")
@operation(
    "Download a background export",
    tags=("exports",),
    path=ExportJobPath,
    responses={200: ("The export file", {"application/json": None, "text/csv": None})},
)
def get_export_file(path: ExportJobPath) -> Response:
    job = _job_of_caller(path.job_id)
    if job.status != "succeeded":
        raise ProblemError(409, "Conflict", f"Export {job.uuid} is {job.status}, not ready to download.")
    fmt = ExportFormat(job.format)
    name = f"respira-export-{job.created_at:%Y%m%d}-{fmt.value}.{EXTENSIONS[fmt]}"
    file = export_jobs.export_path(export_jobs.export_dir(current_app), job)
    return send_file(file, mimetype=MEDIA_TYPES[fmt], as_attachment=True, download_name=name)
