"""Where long work runs: on an RQ task queue (Redis) when RESPIRA_QUEUE_URL is set, else in this process.

Long work: imports, exports written to a file, and the deletion of large accounts.

    submit_import(app, job, path)          run an import job (Apple Health upload, large Health Auto Export
                                           push) on the queue, or in a thread of this process
    run_import(job_id, path)               what a queue worker executes
    submit_export(app, job)                write an export file (backend.exports.jobs), queue or thread
    submit_account_deletion(app, user_id)  delete a large, locked-out account on the queue (backend.accounts)
    check_import(app, job)                 on a poll: re-queue or fail a job whose process died
    recover_orphans(app)                   the same for every started job of the queue, and queue again the
                                           deletion of every account still marked (worker start-up)
    flask --app backend queue worker       a worker for the configured queue (backend.cli)

With a queue, web workers stay stateless: any of them takes an upload (kept on storage every worker and
queue worker can read: IMPORT_UPLOAD_DIR), the job row is in the database, and any number of
`queue worker` processes on any host run the imports. Without one, the embedded default stays a single
command: the import runs in a thread of the web process that took it (backend.imports.jobs).

A job survives the death of its worker: an import can safely run again from the start (what is stored
is skipped by unique constraints), so a job whose process died is put back on the queue, up to
QUEUE_RETRIES times, then marked failed. RQ itself does this once the dead worker's heartbeat expires
(minutes); on the dead process's own host it is done at once, when the job is polled or a worker starts
(its process, "host:pid", is recorded on the job: `worker`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from flask import Flask, has_app_context
from redis import Redis
from rq import Callback, Queue, Retry
from rq.job import Job
from rq.registry import StartedJobRegistry
from sqlalchemy import update

from backend import accounts, background
from backend.db import EXTENSION_KEY, Database
from backend.exports import jobs as export_jobs
from backend.imports import setting
from backend.imports.jobs import (
    ACTIVE,
    ImportSettings,
    _set_status,
    fail_if_stale,
    load_job,
    run_apple_health_job,
    start_in_background,
    worker_gone,
)
from backend.imports.push_stream import run_push_job
from backend.models import ExportJob, ImportJob

log = logging.getLogger("respira.tasks")
QUEUE_KEY = "respira.queue"
_worker_app: Flask | None = None  # set by `flask queue worker`; jobs run with this app's database

JobRunner = Callable[..., "ImportJob | None"]
RUNNERS: dict[str, JobRunner] = {"apple_health": run_apple_health_job, "health_auto_export": run_push_job}
"""How each kind of background job is run: run(db, job_id, path, settings, *, delete_file) -> the job."""


def queue_of(app: Flask) -> Queue | None:
    """The app's task queue, or None when RESPIRA_QUEUE_URL is not set (work runs in-process)."""
    url = app.config.get("QUEUE_URL")
    if not url:
        return None
    if QUEUE_KEY not in app.extensions:
        app.extensions[QUEUE_KEY] = Queue(app.config["QUEUE_NAME"], connection=Redis.from_url(url))
    return cast(Queue, app.extensions[QUEUE_KEY])


def task_id(job: ImportJob) -> str:
    return f"import-{job.uuid}"


def submit_import(app: Flask, job: ImportJob, path: Path) -> None:
    """Run the import job on the queue when there is one, else in a thread of this process."""
    queue = queue_of(app)
    db: Database = app.extensions[EXTENSION_KEY]
    if queue is None:
        start_in_background(app, db, job, path, ImportSettings.from_app(app), runner=RUNNERS[job.kind])
        return
    retries = int(app.config["QUEUE_RETRIES"])
    queue.enqueue(
        run_import,
        job.id,
        str(path),
        job_id=task_id(job),
        job_timeout=int(app.config["QUEUE_JOB_TIMEOUT_S"]),
        retry=Retry(max=retries) if retries else None,
        on_failure=Callback(on_import_failure),
        description=f"import {job.kind} {job.uuid}",
    )


def submit_export(app: Flask, job: ExportJob) -> None:
    """Write the export on the queue when there is one, else in a thread of this process."""
    db: Database = app.extensions[EXTENSION_KEY]
    queue = queue_of(app)
    if queue is None:
        export_jobs.start_in_background(app, db, job)
        return
    retries = int(app.config["QUEUE_RETRIES"])
    queue.enqueue(
        run_export,
        job.id,
        job_id=f"export-{job.uuid}",
        job_timeout=int(app.config["QUEUE_JOB_TIMEOUT_S"]),
        retry=Retry(max=retries) if retries else None,
        description=f"export {job.format} {job.uuid}",
    )


def run_export(job_id: int) -> str | None:
    """The queue task: write the export file (running it again rewrites it whole)."""
    app = _app()
    db: Database = app.extensions[EXTENSION_KEY]
    db.engine.dispose(close=False)  # a forked work-horse must not share the parent's connections
    done = export_jobs.run_export_job(db, job_id, export_jobs.export_dir(app))
    return None if done is None else done.status


def check_export(app: Flask, job: ExportJob) -> ExportJob:
    """A poll's view of an export job: one whose process died runs again (queue) or fails (in-process)."""
    if not export_jobs.stranded(job):
        return job
    db: Database = app.extensions[EXTENSION_KEY]
    if queue_of(app) is None:
        return export_jobs.interrupted(db, job)
    with db.session(write=True) as session, session.begin():
        session.execute(update(ExportJob).where(ExportJob.id == job.id).values(status="queued", worker=None))
    submit_export(app, job)
    return export_jobs.load_job(db, job.id) or job


def submit_account_deletion(app: Flask, user_id: int) -> None:
    """Queue the deletion of a locked-out account (backend.accounts). Called inside the request's
    transaction: the task waits for its commit by locking the user row, and does nothing without it."""
    queue = queue_of(app)
    if queue is None:
        raise RuntimeError("account deletion in batches needs the task queue")
    retries = int(app.config["QUEUE_RETRIES"])
    queue.enqueue(
        run_account_deletion,
        user_id,
        job_id=f"delete-account-{user_id}",
        job_timeout=int(app.config["QUEUE_JOB_TIMEOUT_S"]),
        retry=Retry(max=retries) if retries else None,
        description=f"delete account {user_id}",
    )


def run_account_deletion(user_id: int) -> bool:
    """The queue task: delete the account a batch per transaction (safe to run again after a crash),
    then its export files (an export finishing later removes its own file: backend.exports.jobs)."""
    app = _app()
    db: Database = app.extensions[EXTENSION_KEY]
    db.engine.dispose(close=False)  # a forked work-horse must not share the parent's connections
    with db.session() as session:
        files = export_jobs.files_of(export_jobs.export_dir(app), session, user_id)
    deleted = accounts.delete_in_batches(db, user_id)
    if deleted:
        for file in files:
            file.unlink(missing_ok=True)
    return deleted


def _app() -> Flask:
    if has_app_context():
        return background.app_object()
    global _worker_app
    if _worker_app is None:  # a plain `rq worker`: build the app from the environment once
        from backend import create_app

        _worker_app = create_app()
    return _worker_app


def use_app_in_worker(app: Flask) -> None:
    global _worker_app
    _worker_app = app


def run_import(job_id: int, path: str) -> str | None:
    """The queue task: run the import job; its row says how it went (the task never fails on bad input)."""
    app = _app()
    db: Database = app.extensions[EXTENSION_KEY]
    db.engine.dispose(close=False)  # a forked work-horse must not share the parent's connections
    job = load_job(db, job_id)
    if job is None:  # the account was deleted while the task waited
        Path(path).unlink(missing_ok=True)
        return None
    done = RUNNERS[job.kind](db, job_id, Path(path), ImportSettings.from_app(app), delete_file=True)
    return None if done is None else done.status


def on_import_failure(task: Job, *_exc_info: Any) -> None:
    """RQ's failure callback, also for a task whose worker died (AbandonedJobError): back to `queued`
    when RQ retries it, else failed, so the job row never stays `running` with nobody running it."""
    job_id = task.args[0]
    db: Database = _app().extensions[EXTENSION_KEY]
    job = load_job(db, job_id)
    if job is None or job.status not in ACTIVE:
        return
    if task.retries_left:
        log.warning("import job %s lost its worker; queued again (%s left)", job.uuid, task.retries_left)
        _set_status(db, job_id, status="queued", worker=None)
        return
    log.warning("import job %s lost its worker and has no tries left; failed", job.uuid)
    Path(task.args[1]).unlink(missing_ok=True)  # nothing will read the upload again
    _set_status(
        db,
        job_id,
        status="failed",
        error_type="interrupted",
        error="interrupted: the worker running it stopped, and retries are used up. Upload the file "
        "again: what is stored is kept and not duplicated.",
        worker=None,
    )


def _expire(queue: Queue, wanted: set[str]) -> int:
    """Let RQ treat these started tasks as abandoned now (their process is known dead): it retries each
    one that has tries left, fails the rest, and runs `on_import_failure` either way."""
    registry = StartedJobRegistry(queue=queue)
    entries = {
        f"{task}:{execution}": 0
        for task, execution in registry.get_job_and_execution_ids(cleanup=False)
        if task in wanted
    }
    if entries:
        registry.connection.zadd(registry.key, entries, xx=True)
        registry.cleanup()
    return len(entries)


def recover_orphans(app: Flask) -> int:
    """Re-queue (or fail) every started task of the queue whose process on this host is gone."""
    queue = queue_of(app)
    if queue is None:
        return 0
    db: Database = app.extensions[EXTENSION_KEY]
    registry = StartedJobRegistry(queue=queue)
    dead = set()
    for task_key, _ in registry.get_job_and_execution_ids(cleanup=False):
        task = queue.fetch_job(task_key)
        job = load_job(db, task.args[0]) if task is not None and task.args else None
        if job is not None and worker_gone(job.worker):
            dead.add(task_key)
    recovered = _expire(queue, dead)
    if recovered:
        log.warning("re-queued or failed %d import task(s) whose worker died", recovered)
    # Account deletions are not failed but finished: a marked account is queued again (deleting is
    # idempotent, so one also still queued or running does no harm).
    for user_id in accounts.marked_for_deletion(db):
        submit_account_deletion(app, user_id)
        recovered += 1
    return recovered


def check_import(app: Flask, job: ImportJob) -> ImportJob:
    """A poll's view of the job: a job whose process died is re-queued (queue) or failed (in-process)."""
    db: Database = app.extensions[EXTENSION_KEY]
    queue = queue_of(app)
    if queue is not None and job.status == "running" and worker_gone(job.worker):
        _expire(queue, {task_id(job)})
        job = load_job(db, job.id) or job
    stale_after_s = float(setting(app.config, "IMPORT_STALE_AFTER_S"))
    return fail_if_stale(db, job, stale_after_s, queued_may_wait=queue is not None)
