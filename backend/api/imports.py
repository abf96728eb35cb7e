"""Import endpoints: Apple Health exports (as jobs), Health Auto Export pushes, JSON exports; job status.

Uploads may be far larger than the JSON body limit: this blueprint raises the request's limit to
IMPORT_MAX_CONTENT_LENGTH (export uploads, streamed to disk), IMPORT_JSON_MAX_CONTENT_LENGTH (Health Auto
Export pushes: large ones are streamed to disk too) or IMPORT_RESTORE_MAX_CONTENT_LENGTH (JSON restores,
parsed whole), for its own requests only, after authentication.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import PurePath
from typing import Any, cast

from flask import Blueprint, current_app, request, url_for
from sqlalchemy import select

from backend.api.auth import current_principal
from backend.api.openapi import malformed_json, operation, parse_body, require_json
from backend.background import app_object
from backend.db import get_db, get_session, transactional
from backend.exports.schemas import RespiraExport
from backend.imports import health_auto_export, json_restore, push_stream, setting
from backend.imports.apple_health import ExportError, check_export
from backend.imports.jobs import (
    ImportSettings,
    create_job,
    load_job,
    record_finished_job,
    run_apple_health_job,
    upload_path,
)
from backend.imports.report import stored_rows
from backend.imports.schemas import (
    AppleHealthUpload,
    HealthAutoExportPush,
    ImportJobList,
    ImportJobOut,
    ImportJobPath,
    ImportKind,
    ImportListQuery,
    ImportStatus,
    SkippedRecords,
    StoredKind,
)
from backend.models import ImportJob
from backend.problems import (
    MALFORMED_XML,
    NOT_AN_EXPORT,
    PROBLEM_MIMETYPE,
    UPLOAD_TOO_LARGE,
    FieldError,
    ProblemError,
)
from backend.schemas import Problem
from backend.tasks import check_import, submit_import

bp = Blueprint("imports", __name__)
TAGS = ("imports",)
MULTIPART = "multipart/form-data"
FILE_PART = "file"
UPLOAD_ENDPOINT = "api.imports.apple_health"


BODY_LIMITS = {  # endpoint -> its body limit setting; other endpoints here get the JSON one
    UPLOAD_ENDPOINT: "IMPORT_MAX_CONTENT_LENGTH",  # streamed to disk
    "api.imports.json_import": "IMPORT_RESTORE_MAX_CONTENT_LENGTH",  # parsed whole, in memory
}


@bp.before_request
def _raise_body_limit() -> None:
    name = BODY_LIMITS.get(request.endpoint or "", "IMPORT_JSON_MAX_CONTENT_LENGTH")
    request.max_content_length = int(setting(current_app.config, name))


def job_url(job: ImportJob) -> str:
    return url_for("api.imports.get_import", job_id=str(job.uuid))


def job_json(job: ImportJob) -> dict[str, Any]:
    if job.status == "succeeded":
        progress: float | None = 1.0
    elif job.bytes_total:
        progress = min(job.bytes_done / job.bytes_total, 1.0)
    else:
        progress = None
    out = ImportJobOut(
        id=job.uuid,
        url=job_url(job),
        kind=cast(ImportKind, job.kind),  # a str column; pydantic checks the value
        status=cast(ImportStatus, job.status),
        filename=job.filename,
        progress=progress,
        bytes_total=job.bytes_total,
        bytes_done=job.bytes_done,
        counts=job.counts or {},
        warnings=job.warnings or [],
        skipped=[SkippedRecords.model_validate(s) for s in job.skipped or []],
        stored=[StoredKind.model_validate(r) for r in stored_rows(job.counts or {})],
        error=job.error,
        error_line=job.error_line,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )
    return out.model_dump(mode="json")


def _export_problem(exc: ExportError | None, job: ImportJob | None = None) -> ProblemError:
    """The problem+json for an upload that is not a usable export (before or during its import)."""
    kind = exc.kind if exc else (job.error_type if job else None)
    message = exc.message if exc else (job.error if job else None) or "the import failed"
    where = f" The import job is at {job_url(job)}." if job is not None else ""
    if kind == "malformed":
        return ProblemError(
            400, "Malformed XML", f"{message}.{where}", MALFORMED_XML, [FieldError((FILE_PART,), message)]
        )
    if kind == "unsupported":
        return ProblemError(
            415, "Unsupported Media Type", message, NOT_AN_EXPORT, [FieldError((FILE_PART,), message)]
        )
    if kind == "internal":
        return ProblemError(500, "Internal Server Error", f"{message}{where}")
    if kind == "too_large":
        return ProblemError(
            413,
            "Content Too Large",
            f"{message}.{where}",
            UPLOAD_TOO_LARGE,
            [FieldError((FILE_PART,), message)],
        )
    return ProblemError(
        422,
        "Not an Apple Health export",
        f"{message}.{where}",
        NOT_AN_EXPORT,
        [FieldError((FILE_PART,), message)],
    )


@bp.post("/imports/apple-health")
@operation(
    "Import an Apple Health export",
    description="Upload export.zip (or the export.xml inside it) as multipart/form-data, part `file`. "
    "Heart-rate and respiratory-rate records, the fitness markers (resting heart rate, HRV SDNN, VO2 max, "
    "walking heart-rate average) and workouts are stored, everything else is counted in `skipped` by type "
    "and reason; heart-rate samples attach to the "
    "workouts they overlap and fill missing protocol pulse points (see docs/interop.md for the rule). "
    "Importing the same file again adds nothing. Small files are imported during the request (201); "
    "larger ones in the background (202): poll the job's `url`. Records are stored in batches; if the "
    "import fails, the batches stored stay and the job says where it stopped.",
    tags=TAGS,
    body=AppleHealthUpload,
    body_media_type=MULTIPART,
    responses={
        201: ("Imported (small file)", ImportJobOut),
        202: ("Importing in the background; poll `url`", ImportJobOut),
        400: ("Malformed XML: `detail` names the line and column", {PROBLEM_MIMETYPE: Problem}),
        413: (
            "Larger than IMPORT_MAX_CONTENT_LENGTH, or it would inflate past the import limits (a zip "
            "bomb, a gigantic element)",
            {PROBLEM_MIMETYPE: Problem},
        ),
        415: ("Not multipart/form-data, or the file is neither zip nor XML", {PROBLEM_MIMETYPE: Problem}),
        422: ("No `file` part, or not an Apple Health export", {PROBLEM_MIMETYPE: Problem}),
    },
)
def apple_health() -> tuple[dict[str, Any], int, dict[str, str]]:
    if request.mimetype != MULTIPART:
        raise ProblemError(
            415, "Unsupported Media Type", f"Send the export as {MULTIPART} with a part named '{FILE_PART}'."
        )
    upload = request.files.get(FILE_PART)  # reading the body raises 413 past IMPORT_MAX_CONTENT_LENGTH
    if upload is None:
        raise ProblemError.invalid(
            [
                FieldError(
                    (FILE_PART,), f"missing: attach export.zip or export.xml as the form part '{FILE_PART}'"
                )
            ],
            "Invalid request body",
        )
    settings = ImportSettings.from_app(current_app)
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    job_uuid = uuid.uuid4()
    path = upload_path(settings, job_uuid)
    upload.save(path)
    try:
        if path.stat().st_size == 0:
            raise ExportError("the file is empty", "invalid")
        xml_bytes = check_export(path, settings.limits)  # zip bombs are refused here, uninflated
    except ExportError as exc:
        path.unlink(missing_ok=True)
        raise _export_problem(exc) from None

    db, user_id = get_db(), current_principal().user_id
    filename = "".join(c for c in PurePath(upload.filename or "").name if c.isprintable())[:255] or None
    job = create_job(db, user_id, "apple_health", filename, job_uuid)
    headers = {"Location": job_url(job)}
    if xml_bytes <= settings.inline_max_bytes:  # what will be parsed, not what was sent
        done = run_apple_health_job(db, job.id, path, settings, delete_file=True)
        if done is None:
            raise ProblemError(404, "Not Found", "The account was deleted during the import.")
        if done.status != "succeeded":
            raise _export_problem(None, done)
        return job_json(done), 201, headers
    submit_import(app_object(), job, path)
    return job_json(load_job(db, job.id) or job), 202, headers


@bp.post("/imports/health-auto-export")
@operation(
    "Receive a Health Auto Export push",
    description="The JSON the Health Auto Export app's REST API automation sends. heart_rate, "
    "respiratory_rate, resting_heart_rate, heart_rate_variability, vo2_max and walking_heart_rate_average "
    "metrics and workouts (with heartRateData) are stored; other metrics are counted in `skipped`. "
    "Dates: 'yyyy-MM-dd HH:mm:ss Z' or the 12-hour '2024-09-28 4:51:59 pm +1000'; values must be JSON "
    "numbers. Overlapping syncs never duplicate. A malformed point rejects the push (422 naming it) and "
    "stores nothing. Small pushes are imported during the request (201); large ones (above "
    "IMPORT_PUSH_INLINE_MAX_BYTES) are checked whole, then stored in the background (202): poll `url`.",
    tags=TAGS,
    body=HealthAutoExportPush,
    reads_body=True,
    responses={
        201: ("Imported", ImportJobOut),
        202: ("A large push: importing in the background; poll `url`", ImportJobOut),
    },
)
def health_auto_export_push() -> tuple[dict[str, Any], int, dict[str, str]]:
    require_json()
    inline_max = int(setting(current_app.config, "IMPORT_PUSH_INLINE_MAX_BYTES"))
    length = request.content_length
    if length is not None and length <= inline_max:
        return transactional(_push_inline)(parse_body(HealthAutoExportPush))
    # Large (or of unknown length): to disk in chunks, never whole in memory (413 past the body limit).
    settings = ImportSettings.from_app(current_app)
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    job_uuid = uuid.uuid4()
    path = upload_path(settings, job_uuid)
    try:
        with open(path, "wb") as spool:
            shutil.copyfileobj(request.stream, spool, 1024 * 1024)
        if path.stat().st_size <= inline_max:
            return transactional(_push_inline)(parse_body(HealthAutoExportPush, path.read_bytes()))
        push_stream.scan(path)  # structure and JSON syntax now, as a problem+json; values in the job
    except push_stream.PushInvalid as exc:
        path.unlink(missing_ok=True)
        if exc.errors[0].loc == () and exc.errors[0].detail.startswith("not valid JSON"):
            raise malformed_json(exc.errors[0].detail.removeprefix("not valid JSON: ")) from None
        raise ProblemError.invalid(exc.errors, "Invalid Health Auto Export data") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    db = get_db()
    job = create_job(db, current_principal().user_id, "health_auto_export", None, job_uuid)
    app = app_object()
    submit_import(app, job, path)
    return job_json(load_job(db, job.id) or job), 202, {"Location": job_url(job)}


def _push_inline(body: HealthAutoExportPush) -> tuple[dict[str, Any], int, dict[str, str]]:
    session, user_id = get_session(), current_principal().user_id
    tolerance_s = float(setting(current_app.config, "IMPORT_PULSE_TOLERANCE_S"))
    counts, warnings, skipped = health_auto_export.import_push(session, user_id, body, tolerance_s)
    job = record_finished_job(session, user_id, "health_auto_export", counts, warnings, skipped=skipped)
    return job_json(job), 201, {"Location": job_url(job)}


@bp.post("/imports/json")
@operation(
    "Import a JSON export (restore)",
    description="The document `GET /api/v1/export?format=json` produces, from this or another account or "
    "server. Workouts are created or replaced by id, samples already stored are skipped: importing it "
    "twice changes nothing. One transaction: any invalid part rejects it (422 naming the field).",
    tags=TAGS,
    body=RespiraExport,
    responses={201: ("Imported", ImportJobOut)},
)
@transactional
def json_import(body: RespiraExport) -> tuple[dict[str, Any], int, dict[str, str]]:
    session, user_id = get_session(), current_principal().user_id
    counts, warnings = json_restore.restore(session, user_id, body)
    job = record_finished_job(session, user_id, "json", counts, warnings)
    return job_json(job), 201, {"Location": job_url(job)}


@bp.get("/imports/<job_id>")
@operation(
    "Progress and result of an import",
    description="`status` queued, running, then succeeded or failed; `progress` 0-1; `counts` stored.",
    tags=TAGS,
    path=ImportJobPath,
    responses={200: ("The import job", ImportJobOut)},
)
def get_import(path: ImportJobPath) -> dict[str, Any]:
    job = (
        get_session()
        .scalars(
            select(ImportJob).where(
                ImportJob.uuid == path.job_id, ImportJob.user_id == current_principal().user_id
            )
        )
        .one_or_none()
    )
    if job is None:
        raise ProblemError(404, "Not Found", f"No import {path.job_id} for this user.")
    return job_json(check_import(app_object(), job))


@bp.get("/imports")
@operation(
    "Recent imports, newest first",
    tags=TAGS,
    query=ImportListQuery,
    responses={200: ("Import jobs", ImportJobList)},
)
def list_imports(query: ImportListQuery) -> dict[str, Any]:
    jobs = get_session().scalars(
        select(ImportJob)
        .where(ImportJob.user_id == current_principal().user_id)
        .order_by(ImportJob.created_at.desc(), ImportJob.id.desc())
        .limit(query.limit)
    )
    return {"imports": [job_json(job) for job in jobs]}
