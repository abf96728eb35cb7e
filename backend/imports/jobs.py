"""Import jobs: an Apple Health export is stored batch by batch, with progress a client can poll.

    create_job(...)                 the job row, committed before any work (the client gets its URL)
    run_apple_health_job(...)       parse and store; used inline, in a background thread and by the CLI
    start_in_background(app, ...)   run it in a thread of this process, with its own sessions

Transactions: each batch of `IMPORT_BATCH_SIZE` records is stored in its own transaction, together with
the job's progress (`bytes_done`, `counts`). So at every moment the job says exactly what is stored. When
the import fails (malformed XML, a server error) the batches already stored stay; the records parsed
before the error are stored too, and the job records the error and the line where it stopped. Importing
the file again completes it: samples and workouts already stored are skipped by unique constraints.

Where background jobs run: see backend.tasks (an RQ queue when RESPIRA_QUEUE_URL is set, else a thread
of the web process that took the upload, `start_in_background`). A job whose process went away stops
updating its heartbeat, and is reported failed after `IMPORT_STALE_AFTER_S`; at once when the job names
its process ("host:pid") and that process is gone from this host (on a queue it is first run again).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import background
from backend.db import Database, utcnow
from backend.imports import setting
from backend.imports.apple_health import (
    ExportError,
    ExportLimits,
    ParseStats,
    open_export,
    parse_export,
)
from backend.imports.matching import match_workouts
from backend.imports.records import (
    MARKERS,
    HealthWorkoutIn,
    MarkerIn,
    SampleIn,
    store_health_workouts,
    store_markers,
    store_samples,
)
from backend.imports.report import MAX_WARNINGS, Skipped, SkipTally
from backend.models import ImportJob

log = logging.getLogger("respira.imports")
ACTIVE = ("queued", "running")
# What an import of health-app data counts (the job's `counts`, before matching adds its own).
COUNT_KEYS = (
    "records_read",
    "heart_rate_read",
    "heart_rate_added",
    "respiratory_rate_read",
    "respiratory_rate_added",
    "health_workouts_read",
    "health_workouts_added",
    *(f"{kind}_{step}" for kind in MARKERS for step in ("read", "added")),
    "skipped",
)


@dataclass(frozen=True)
class ImportSettings:
    batch_size: int
    pulse_tolerance_s: float
    upload_dir: Path
    inline_max_bytes: int
    stale_after_s: float
    limits: ExportLimits = field(default_factory=ExportLimits)

    @classmethod
    def from_app(cls, app: Flask) -> ImportSettings:
        config = app.config
        upload_dir = setting(config, "IMPORT_UPLOAD_DIR") or Path(app.instance_path) / "imports"
        return cls(
            batch_size=int(setting(config, "IMPORT_BATCH_SIZE")),
            pulse_tolerance_s=float(setting(config, "IMPORT_PULSE_TOLERANCE_S")),
            upload_dir=Path(upload_dir),
            inline_max_bytes=int(setting(config, "IMPORT_INLINE_MAX_BYTES")),
            stale_after_s=float(setting(config, "IMPORT_STALE_AFTER_S")),
            limits=ExportLimits.from_config(config),
        )


class JobGone(Exception):
    """The job row disappeared (its user deleted the account): stop quietly."""


def create_job(
    db: Database, user_id: int, kind: str, filename: str | None = None, job_uuid: uuid.UUID | None = None
) -> ImportJob:
    with db.session(write=True) as session, session.begin():
        job = ImportJob(uuid=job_uuid or uuid.uuid4(), user_id=user_id, kind=kind, filename=filename)
        session.add(job)
        session.flush()
        return job


def load_job(db: Database, job_id: int) -> ImportJob | None:
    with db.session() as session:
        return session.get(ImportJob, job_id)


def upload_path(settings: ImportSettings, job_uuid: uuid.UUID) -> Path:
    return settings.upload_dir / f"{job_uuid}.upload"


@dataclass
class _Run:
    """What one Apple Health import has parsed and stored so far."""

    db: Database
    job_id: int
    user_id: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    skips: SkipTally = field(default_factory=SkipTally)
    samples: list[SampleIn] = field(default_factory=list)
    markers: list[MarkerIn] = field(default_factory=list)
    workouts: list[HealthWorkoutIn] = field(default_factory=list)
    first_at: datetime | None = None
    last_at: datetime | None = None

    def take(self, item: SampleIn | MarkerIn | HealthWorkoutIn | Skipped) -> None:
        if isinstance(item, Skipped):
            self.counts["skipped"] += 1
            self.skips.add(item)
            return
        if isinstance(item, MarkerIn):  # no workout to match: not part of the matched time range
            self.markers.append(item)
            self.counts[f"{item.kind}_read"] += 1
            return
        if isinstance(item, SampleIn):
            self.samples.append(item)
            self.counts[f"{item.kind}_read"] += 1
            start, end = item.started_at, item.ended_at
        else:
            self.workouts.append(item)
            self.counts["health_workouts_read"] += 1
            start, end = item.started_at, item.ended_at
        self.first_at = start if self.first_at is None else min(self.first_at, start)
        self.last_at = end if self.last_at is None else max(self.last_at, end)

    @property
    def pending(self) -> int:
        return len(self.samples) + len(self.markers) + len(self.workouts)

    def store(self, bytes_done: int, bytes_total: int | None, records_read: int) -> None:
        """Store the pending batch and the job's progress in one transaction."""
        counts = dict(self.counts, records_read=records_read)
        with self.db.session(write=True) as session, session.begin():
            job = _job_for_update(session, self.job_id)
            added = store_samples(session, self.user_id, self.samples)
            added |= store_markers(session, self.user_id, self.markers)
            for kind, new in added.items():
                counts[f"{kind}_added"] += new
            counts["health_workouts_added"] += store_health_workouts(session, self.user_id, self.workouts)
            job.counts, job.warnings, job.skipped = counts, list(self.skips.warnings), self.skips.as_list()
            job.bytes_done, job.bytes_total, job.heartbeat_at = bytes_done, bytes_total, utcnow()
        self.counts = counts
        self.samples, self.markers, self.workouts = [], [], []


def _job_for_update(session: Session, job_id: int) -> ImportJob:
    job = session.get(ImportJob, job_id)
    if job is None:
        raise JobGone(job_id)
    return job


def record_crash(db: Database, job_id: int) -> None:
    """Mark a job whose import raised as failed (already logged); keep what was stored."""
    try:
        _set_status(
            db,
            job_id,
            status="failed",
            error="the server failed while importing; it was logged. Records stored so far are kept.",
            error_type="internal",
            finished_at=utcnow(),
        )
    except Exception:  # the database itself may be what failed
        log.exception("could not record the failure of import job %s", job_id)


def _set_status(db: Database, job_id: int, **changes: Any) -> None:
    with db.session(write=True) as session, session.begin():
        job = session.get(ImportJob, job_id)
        if job is None:
            raise JobGone(job_id)
        for name, value in changes.items():
            setattr(job, name, value)
        job.heartbeat_at = utcnow()


def run_apple_health_job(
    db: Database,
    job_id: int,
    path: Path,
    settings: ImportSettings,
    *,
    delete_file: bool = False,
    on_batch: Callable[[int, int | None, dict[str, int]], None] | None = None,
) -> ImportJob | None:
    """Import the export at `path` for the job's user; returns the finished job (None if it vanished).

    Never raises for bad input: the job ends `failed` with the error (and its line for malformed XML).
    `on_batch(bytes_done, bytes_total, counts)` is called after each stored batch (the CLI's progress).
    """
    try:
        job = load_job(db, job_id)
        if job is None:
            raise JobGone(job_id)
        run = _Run(db, job_id, job.user_id)
        _set_status(db, job_id, status="running", started_at=utcnow(), worker=this_worker())
        stats, bytes_total, bytes_done = ParseStats(), None, 0
        try:
            with open_export(path, settings.limits) as export:
                bytes_total = export.size
                for item in parse_export(export.stream, stats, settings.limits):
                    run.take(item)
                    if run.pending >= settings.batch_size:
                        bytes_done = export.stream.bytes_read
                        run.store(bytes_done, bytes_total, stats.records)
                        if on_batch is not None:
                            on_batch(bytes_done, bytes_total, run.counts)
                bytes_done = bytes_total
        except ExportError as exc:
            run.store(bytes_done, bytes_total, stats.records)  # what was read before the error is good
            _set_status(
                db,
                job_id,
                status="failed",
                error=exc.message,
                error_type=exc.kind,
                error_line=exc.line,
                finished_at=utcnow(),
            )
            log.info("import %s failed: %s", job.uuid, exc.message)
            return load_job(db, job_id)
        run.store(bytes_done, bytes_total, stats.records)
        if on_batch is not None:
            on_batch(bytes_done, bytes_total, run.counts)
        with db.session(write=True) as session, session.begin():
            matched = match_workouts(
                session, run.user_id, run.first_at, run.last_at, settings.pulse_tolerance_s
            )
            job = _job_for_update(session, job_id)
            job.counts = {**run.counts, **matched.as_dict()}
            job.status, job.finished_at, job.heartbeat_at = "succeeded", utcnow(), utcnow()
        log.info("import %s done: %s", job.uuid, job.counts)
        return load_job(db, job_id)
    except JobGone:
        log.info("import job %s vanished (account deleted?); stopped", job_id)
        return None
    except Exception:
        log.exception("import job %s crashed", job_id)
        record_crash(db, job_id)
        return load_job(db, job_id)
    finally:
        if delete_file:
            path.unlink(missing_ok=True)


# ---- background threads -------------------------------------------------------------------------------


def start_in_background(
    app: Flask,
    db: Database,
    job: ImportJob,
    path: Path,
    settings: ImportSettings,
    runner: Callable[..., ImportJob | None] | None = None,
) -> None:
    """Run the import (`runner`, default run_apple_health_job, same arguments) in a daemon thread of
    this process, with its own database sessions."""
    background.start_thread(
        app,
        job.uuid,
        runner or run_apple_health_job,
        (db, job.id, path, settings),
        {"delete_file": True},
        name=f"respira-import-{job.uuid}",
    )


def wait_for_job(app: Flask, job_uuid: uuid.UUID, timeout_s: float | None = None) -> bool:
    """Wait for a background import of this process to end (tests, shutdown); True when it has."""
    return background.wait_for(app, job_uuid, timeout_s)


def record_finished_job(
    session: Session,
    user_id: int,
    kind: str,
    counts: dict[str, int],
    warnings: list[str],
    filename: str | None = None,
    skipped: list[dict[str, Any]] | None = None,
) -> ImportJob:
    """The job row of an import done within one request (a push, a JSON restore), in its transaction."""
    now = utcnow()
    job = ImportJob(
        user_id=user_id,
        kind=kind,
        status="succeeded",
        filename=filename,
        counts=counts,
        warnings=warnings[:MAX_WARNINGS],
        skipped=skipped or [],
        started_at=now,
        finished_at=now,
        heartbeat_at=now,
    )
    session.add(job)
    session.flush()
    return job


def this_worker() -> str:
    """Names the process running a job: "host:pid"."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_gone(worker: str | None) -> bool:
    """True when `worker` ran on this host and that process no longer exists (killed, restarted)."""
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host's process: only its heartbeat can tell
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, under another user
        return False
    return False


def fail_if_stale(
    db: Database, job: ImportJob, stale_after_s: float, *, queued_may_wait: bool = False
) -> ImportJob:
    """A queued or running job lost its process: say so. At once when the process that ran it is known
    to be gone (this host), else after `stale_after_s` without a heartbeat. `queued_may_wait`: a job
    waiting on a task queue is not stale however long it waits for a worker."""
    if job.status not in ACTIVE:
        return job
    last = job.heartbeat_at or job.started_at or job.created_at
    waited_too_long = utcnow() - last >= timedelta(seconds=stale_after_s)
    if job.status == "running" and worker_gone(job.worker):
        why = "the server process running it stopped (killed or restarted)"
    elif waited_too_long and not (job.status == "queued" and queued_may_wait):
        why = f"no progress for {stale_after_s:.0f} s (the server probably restarted)"
    else:
        return job
    with db.session(write=True) as session, session.begin():
        stored = session.scalars(select(ImportJob).where(ImportJob.id == job.id)).one_or_none()
        if stored is not None and stored.status in ACTIVE:
            stored.status, stored.finished_at, stored.error_type = "failed", utcnow(), "interrupted"
            stored.error = (
                f"interrupted: {why}. Upload the file again: what is stored is kept and not duplicated."
            )
    return load_job(db, job.id) or job
