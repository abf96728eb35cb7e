"""The import report page: each recent import with what it counted, stored, and skipped by type and why.

The numbers are the import job's own (`counts`, `skipped`, `warnings`), exactly what
`GET /api/v1/imports/<id>` returns; `backend.imports.report.stored_rows` turns the counts into rows.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from sqlalchemy import select

from backend.db import get_session
from backend.imports.report import stored_rows
from backend.models import ImportJob
from backend.web.auth import current_web_user

bp = Blueprint("imports", __name__)
SHOWN = 20
KIND_LABELS = {
    "apple_health": "Apple Health export",
    "health_auto_export": "Health Auto Export",
    "json": "JSON",
}


def report(job: ImportJob) -> dict[str, Any]:
    counts = job.counts or {}
    return {
        "id": str(job.uuid),
        "kind": KIND_LABELS.get(job.kind, job.kind),
        "filename": job.filename,
        "status": job.status,
        "created_at": job.created_at,
        "records_read": counts.get("records_read"),
        "skipped_total": counts.get("skipped", 0),
        "stored": stored_rows(counts),
        "skipped": job.skipped or [],
        "warnings": job.warnings or [],
        "error": job.error,
        "error_line": job.error_line,
        "matched": {
            k: counts[k] for k in ("workouts_linked", "samples_attached", "pulse_filled") if k in counts
        },
    }


@bp.get("/imports")
def index() -> str:
    jobs = get_session().scalars(
        select(ImportJob)
        .where(ImportJob.user_id == current_web_user().user_id)
        .order_by(ImportJob.created_at.desc(), ImportJob.id.desc())
        .limit(SHOWN)
    )
    return render_template("web/imports.html", imports=[report(job) for job in jobs], active="imports")
