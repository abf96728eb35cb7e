"""Long work on a task queue (RQ on the real local Redis) and in-process, and jobs whose worker died.

Redis at 127.0.0.1:6379 is shared: every test uses its own queue name and removes its keys afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import Api, app_config, make_user, sample_workout, workout_url
from flask import Flask
from interop_helpers import count, db_of, upload
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import SimpleWorker
from sqlalchemy import update
from test_apple_health import EXPECTED_COUNTS, scenario_export

from backend import create_app, tasks
from backend.exports import jobs as export_jobs
from backend.exports.jobs import wait_for_export
from backend.exports.schemas import ExportFormat
from backend.imports.jobs import _set_status, create_job, wait_for_job
from backend.models import ExportJob, HealthSample

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CRASH_WORKER = Path(__file__).with_name("queue_crash_worker.py")
NOT_MATCHED = {"workouts_linked": 0, "samples_attached": 0, "pulse_filled": 0}


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A queue of this test alone; its keys (queue, registries, tasks, workers) are deleted after it."""
    redis = Redis.from_url(REDIS_URL)
    try:
        redis.ping()
    except RedisConnectionError as exc:
        pytest.skip(f"no Redis at {REDIS_URL} ({exc}); scripts/system-deps starts one")
    name = f"respira-test-{uuid.uuid4().hex[:12]}"
    yield name
    shutil.rmtree(uploads_of(name), ignore_errors=True)
    for key in redis.scan_iter(f"*{name}*"):
        redis.delete(key)
    tasks_of_any_queue = ("rq:job:import-*", "rq:job:export-*", "rq:job:delete-account-*")
    for key in (key for pattern in tasks_of_any_queue for key in redis.scan_iter(pattern)):
        if name.encode() in (redis.hget(key, "origin") or b""):
            redis.delete(key)
    redis.close()


def queued_app(database_url: str, queue_name: str, **config: object) -> tuple[Flask, Api]:
    settings = {"QUEUE_URL": REDIS_URL, "QUEUE_NAME": queue_name, "IMPORT_INLINE_MAX_BYTES": 0}
    settings["IMPORT_UPLOAD_DIR"] = str(uploads_of(queue_name))
    app = create_app(app_config(database_url, **settings, **config))
    user_id, token = make_user(app, "carol")
    return app, Api(app, token, user_id)


def uploads_of(queue_name: str) -> Path:
    """Uploads of this test's jobs: shared storage of web and queue workers, apart from other tests'."""
    return Path(tempfile.gettempdir()) / queue_name


def work(app: Flask) -> None:
    """Run every queued task in this process, as `flask queue worker --burst` would (without forking)."""
    queue = tasks.queue_of(app)
    assert queue is not None
    tasks.use_app_in_worker(app)
    with app.app_context():
        SimpleWorker([queue], connection=queue.connection).work(burst=True)


def crash_a_worker(app: Flask, database_url: str, queue_name: str) -> None:
    """A real worker process takes the task and is SIGKILLed after the first batch is committed."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "RESPIRA_QUEUE_URL": REDIS_URL,
        "RESPIRA_QUEUE_NAME": queue_name,
        "RESPIRA_IMPORT_BATCH_SIZE": str(app.config["IMPORT_BATCH_SIZE"]),
        "RESPIRA_LOG_LEVEL": "WARNING",
    }
    done = subprocess.run([sys.executable, str(CRASH_WORKER)], env=env, capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr.decode()[-2000:]


def test_with_a_queue_an_upload_waits_for_a_worker_then_imports(
    app: Flask, database_url: str, queue_name: str
) -> None:
    job_app, carol = queued_app(database_url, queue_name)
    response = upload(carol, scenario_export())
    assert response.status_code == 202
    job = response.json
    assert carol.get(job["url"]).json["status"] == "queued"  # nothing runs it in the web process
    assert tasks.queue_of(job_app).count == 1  # type: ignore[union-attr]
    work(job_app)
    done = carol.get(job["url"]).json
    assert done["status"] == "succeeded" and done["counts"] == EXPECTED_COUNTS | NOT_MATCHED
    assert not list(uploads_of(queue_name).glob("*.upload"))
    db_of(job_app).dispose()


def test_with_a_queue_a_large_health_auto_export_push_runs_on_a_worker(
    app: Flask, database_url: str, queue_name: str
) -> None:
    job_app, carol = queued_app(database_url, queue_name, IMPORT_PUSH_INLINE_MAX_BYTES=10)
    data = [{"date": f"2024-09-28 16:4{i}:00 +1000", "Avg": 60 + i} for i in range(5)]
    push = {"data": {"metrics": [{"name": "heart_rate", "units": "bpm", "data": data}]}}
    response = carol.post("/api/v1/imports/health-auto-export", json=push)
    assert response.status_code == 202, response.json
    assert carol.get(response.json["url"]).json["status"] == "queued"
    work(job_app)
    done = carol.get(response.json["url"]).json
    assert done["status"] == "succeeded" and done["counts"]["heart_rate_added"] == 5, done
    assert count(job_app, HealthSample) == 5
    db_of(job_app).dispose()


def test_a_task_whose_worker_died_is_queued_again_and_completes_without_duplicates(
    app: Flask, database_url: str, queue_name: str
) -> None:
    job_app, carol = queued_app(database_url, queue_name, IMPORT_BATCH_SIZE=4)
    job = upload(carol, scenario_export()).json
    crash_a_worker(job_app, database_url, queue_name)
    assert 0 < count(job_app, HealthSample) < EXPECTED_COUNTS["heart_rate_added"] + 2  # one batch stored
    # The poll sees the runner's process is gone: RQ puts the task back on the queue at once.
    polled = carol.get(job["url"]).json
    assert polled["status"] == "queued", polled
    work(job_app)
    done = carol.get(job["url"]).json
    assert done["status"] == "succeeded", done
    stored = count(job_app, HealthSample)
    assert stored == EXPECTED_COUNTS["heart_rate_added"] + EXPECTED_COUNTS["respiratory_rate_added"]
    db_of(job_app).dispose()


def test_a_task_out_of_retries_is_failed_at_once_when_its_worker_died(
    app: Flask, database_url: str, queue_name: str
) -> None:
    job_app, carol = queued_app(database_url, queue_name, IMPORT_BATCH_SIZE=4, QUEUE_RETRIES=0)
    job = upload(carol, scenario_export()).json
    crash_a_worker(job_app, database_url, queue_name)
    failed = carol.get(job["url"]).json
    assert failed["status"] == "failed" and "worker running it stopped" in failed["error"]
    assert not list(uploads_of(queue_name).glob("*.upload"))  # nothing will import it any more
    assert tasks.queue_of(job_app).count == 0  # type: ignore[union-attr]
    db_of(job_app).dispose()


def test_a_restarted_worker_recovers_the_tasks_of_dead_workers_first(
    app: Flask, database_url: str, queue_name: str
) -> None:
    job_app, carol = queued_app(database_url, queue_name, IMPORT_BATCH_SIZE=4)
    job = upload(carol, scenario_export()).json
    crash_a_worker(job_app, database_url, queue_name)
    assert tasks.recover_orphans(job_app) == 1  # what `flask queue worker` does before working
    assert tasks.recover_orphans(job_app) == 0
    work(job_app)
    assert carol.get(job["url"]).json["status"] == "succeeded"
    db_of(job_app).dispose()


def test_the_queue_worker_command_needs_a_queue(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["queue", "worker", "--burst"])
    assert result.exit_code != 0 and "RESPIRA_QUEUE_URL is not set" in result.output


def test_without_a_queue_the_import_runs_in_a_thread_of_this_process(
    app: Flask, database_url: str, tmp_path: Path
) -> None:
    job_app = create_app(app_config(database_url, IMPORT_INLINE_MAX_BYTES=0, IMPORT_UPLOAD_DIR=str(tmp_path)))
    assert tasks.queue_of(job_app) is None
    user_id, token = make_user(job_app, "carol")
    response = upload(Api(job_app, token, user_id), scenario_export())
    assert response.status_code == 202
    assert wait_for_job(job_app, uuid.UUID(response.json["id"]), timeout_s=60)
    assert Api(job_app, token, user_id).get(response.json["url"]).json["status"] == "succeeded"
    db_of(job_app).dispose()


def dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    return int(finished.stdout)


def test_in_process_a_job_whose_process_died_is_failed_at_once(alice: Api, app: Flask) -> None:
    db = db_of(app)
    job = create_job(db, alice.user_id, "apple_health", "export.zip")
    _set_status(db, job.id, status="running", worker=f"{socket.gethostname()}:{dead_pid()}")
    # Not stale by the heartbeat rule (15 min by default), yet known dead: failed on the first poll.
    polled = alice.get(f"/api/v1/imports/{job.uuid}").json
    assert polled["status"] == "failed" and "process running it stopped" in polled["error"]


def test_a_job_running_in_a_live_process_or_on_another_host_is_left_alone(alice: Api, app: Flask) -> None:
    db = db_of(app)
    for runner in (f"{socket.gethostname()}:{os.getpid()}", f"elsewhere.invalid:{dead_pid()}"):
        job = create_job(db, alice.user_id, "apple_health", "export.zip")
        _set_status(db, job.id, status="running", worker=runner)
        assert alice.get(f"/api/v1/imports/{job.uuid}").json["status"] == "running"


# ---- exports written to a file: on a queue worker, or in a thread of this process ----------------------


def without_export_time(document: dict) -> dict:
    """Two JSON exports of the same data differ only in when they were made (backend.exports)."""
    return {key: value for key, value in document.items() if key != "exported_at"}


def test_with_a_queue_an_export_is_written_by_a_worker_then_downloaded(
    app: Flask, database_url: str, queue_name: str, tmp_path: Path
) -> None:
    job_app, carol = queued_app(database_url, queue_name, EXPORT_DIR=str(tmp_path))
    for _ in range(2):
        assert carol.put(workout_url(uuid.uuid4()), json=sample_workout()).status_code == 201
    streamed = carol.get("/api/v1/export?format=json").json

    answer = carol.post("/api/v1/exports?format=json")
    assert answer.status_code == 202 and answer.headers["Location"] == answer.json["url"]
    job = answer.json
    assert job["status"] == "queued" and job["file_url"] is None
    assert carol.get(job["url"]).json["status"] == "queued"  # nothing runs it in the web process
    assert carol.get(f"{job['url']}/file").status_code == 409
    assert tasks.queue_of(job_app).count == 1  # type: ignore[union-attr]

    work(job_app)
    done = carol.get(job["url"]).json
    assert done["status"] == "succeeded" and done["bytes"] > 0, done
    download = carol.get(done["file_url"])
    assert download.status_code == 200 and download.mimetype == "application/json"
    assert without_export_time(json.loads(download.data)) == without_export_time(streamed)
    dave_id, dave_token = make_user(job_app, "dave")
    assert Api(job_app, dave_token, dave_id).get(job["url"]).status_code == 404  # only its owner's
    db_of(job_app).dispose()


def test_without_a_queue_an_export_is_written_in_a_thread_of_this_process(
    app: Flask, database_url: str, tmp_path: Path
) -> None:
    job_app = create_app(app_config(database_url, EXPORT_DIR=str(tmp_path)))
    user_id, token = make_user(job_app, "carol")
    carol = Api(job_app, token, user_id)
    assert carol.put(workout_url(uuid.uuid4()), json=sample_workout()).status_code == 201
    answer = carol.post("/api/v1/exports?format=csv")
    assert answer.status_code == 202
    assert wait_for_export(job_app, uuid.UUID(answer.json["id"]), timeout_s=60)
    done = carol.get(answer.json["url"]).json
    assert done["status"] == "succeeded", done
    download = carol.get(done["file_url"])
    assert download.status_code == 200 and download.data == carol.get("/api/v1/export?format=csv").data
    assert carol.delete("/api/v1/me").status_code == 204
    assert not list(tmp_path.iterdir())  # the file went with the account
    db_of(job_app).dispose()


def test_an_export_whose_process_died_runs_again_on_a_queue_or_fails_in_process(
    app: Flask, database_url: str, queue_name: str, tmp_path: Path
) -> None:
    dead = f"{socket.gethostname()}:{dead_pid()}"
    in_process = create_app(app_config(database_url, EXPORT_DIR=str(tmp_path)))
    queued, carol = queued_app(database_url, queue_name, EXPORT_DIR=str(tmp_path))
    for job_app, expected in ((in_process, "failed"), (queued, "queued")):
        job = export_jobs.create_job(db_of(job_app), carol.user_id, ExportFormat.json, None)
        with db_of(job_app).session(write=True) as session, session.begin():
            session.execute(
                update(ExportJob).where(ExportJob.id == job.id).values(status="running", worker=dead)
            )
        polled = Api(job_app, carol.token, carol.user_id).get(f"/api/v1/exports/{job.uuid}").json
        assert polled["status"] == expected, polled
    work(queued)
    assert carol.get(f"/api/v1/exports/{job.uuid}").json["status"] == "succeeded"
    for job_app in (in_process, queued):
        db_of(job_app).dispose()
