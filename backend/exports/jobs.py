"""Export jobs: an account's export written to a file in the background, then downloaded.

Why: `GET /api/v1/export` streams the export within one request, which is fine for a few hundred
workouts, but an account with years of history costs seconds to minutes of CPU (every segment is
serialised), and a sync web worker is tied up all that time. `POST /api/v1/exports` instead records a
job; the export is written by a queue worker when RESPIRA_QUEUE_URL is set (backend.tasks), else by a
thread of the web process that took the request, like the imports. The client polls the job and
downloads the file when it has succeeded.

    create_job(db, user_id, fmt, since)     the job row, committed before any work
    run_export_job(db, job_id, export_dir)  write the file; used by queue workers and threads
    start_in_background(app, db, job)       a thread of this process
    check_export(app, job)                  on a poll: a job whose process died is run again (queue)
                                            or failed (in-process)

The file is written under a temporary name and renamed when complete, so a file named for a job is
always whole; a job that runs again simply rewrites it. Files are deleted with the account.
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend import background
from backend.db import Database, rowcount, utcnow
from backend.exports import EXTENSIONS, export_stream
from backend.exports.schemas import ExportFormat
from backend.imports.jobs import this_worker, worker_gone
from backend.models import ExportJob

log = logging.getLogger("respira.exports")


def export_dir(app: Flask) -> Path:
    """Where export files are written: storage every web and queue worker can read (EXPORT_DIR)."""
    return Path(app.config.get("EXPORT_DIR") or Path(app.instance_path) / "exports")


def export_path(directory: Path, job: ExportJob) -> Path:
    return directory / f"{job.uuid}.{EXTENSIONS[ExportFormat(job.format)]}"


def create_job(db: Database, user_id: int, fmt: ExportFormat, since: datetime | None) -> ExportJob:
    with db.session(write=True) as session, session.begin():
        job = ExportJob(user_id=user_id, format=fmt.value, since=since, status="queued")
        session.add(job)
        session.flush()
        return job


def load_job(db: Database, job_id: int) -> ExportJob | None:
    with db.session() as session:
        return session.get(ExportJob, job_id)


def _set(db: Database, job_id: int, **values: Any) -> bool:
    """Update the job row; False when it is gone (its account was deleted meanwhile)."""
    with db.session(write=True) as session, session.begin():
        return bool(
            rowcount(session.execute(update(ExportJob).where(ExportJob.id == job_id).values(**values)))
        )


def run_export_job(db: Database, job_id: int, directory: Path) -> ExportJob | None:
    """Write the job's export to its file; the job row says how it went (None: the job is gone)."""
    job = load_job(db, job_id)
    if job is None:
        return None
    _set(db, job_id, status="running", started_at=utcnow(), worker=this_worker(), error=None)
    target = export_path(directory, job)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        written = 0
        # One read transaction: the export is a consistent snapshot on PostgreSQL (REPEATABLE READ would
        # be stricter; a read committed export equals a streamed GET /export of the same moment).
        with db.session() as session, partial.open("wb") as out:
            chunks = export_stream(ExportFormat(job.format), session, job.user_id, utcnow(), job.since)
            for chunk in chunks:
                data = chunk.encode("utf-8")
                out.write(data)
                written += len(data)
        partial.replace(target)
    except Exception as exc:  # any failure is the job's result, not the worker's crash
        log.exception("export job %s failed", job.uuid)
        partial.unlink(missing_ok=True)
        _set(
            db,
            job_id,
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            finished_at=utcnow(),
            worker=None,
        )
    else:
        if not _set(db, job_id, status="succeeded", bytes_written=written, finished_at=utcnow(), worker=None):
            # The account was deleted while the file was written: whoever deleted it removed the files
            # it found, and this one was not there yet.
            target.unlink(missing_ok=True)
    return load_job(db, job_id)


def start_in_background(app: Flask, db: Database, job: ExportJob) -> None:
    """Run the export in a daemon thread of this process (no task queue configured)."""
    background.start_thread(
        app, job.uuid, run_export_job, (db, job.id, export_dir(app)), name=f"respira-export-{job.uuid}"
    )


def wait_for_export(app: Flask, job_uuid: uuid.UUID, timeout_s: float | None = None) -> bool:
    """Wait for a background export of this process to end (tests, shutdown); True when it has."""
    return background.wait_for(app, job_uuid, timeout_s)


def files_of(directory: Path, session: Session, user_id: int) -> list[Path]:
    """The export files of a user's jobs (deleted with the account)."""
    jobs = session.scalars(select(ExportJob).where(ExportJob.user_id == user_id))
    return [export_path(directory, job) for job in jobs]


def interrupted(db: Database, job: ExportJob) -> ExportJob:
    """Fail a job whose process is gone (in-process exports: nothing would ever finish it)."""
    _set(
        db,
        job.id,
        status="failed",
        error="interrupted: the server process writing it stopped. Ask for the export again.",
        finished_at=utcnow(),
        worker=None,
    )
    return load_job(db, job.id) or job


def stranded(job: ExportJob) -> bool:
    """Running, but its process on this host is gone."""
    return job.status == "running" and worker_gone(job.worker)
