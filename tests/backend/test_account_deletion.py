"""DELETE /api/v1/me removes every row of the caller, in every table, and nobody else's."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from api_helpers import Api, app_config, make_user, sample_workout, workout_url
from flask import Flask
from interop_helpers import (
    db_of,
    export_xml,
    heart_rate,
    hk_workout,
    marker_records,
    respiratory_rate,
    upload,
)
from sqlalchemy import func, select, text
from test_tasks import REDIS_URL, queue_name, uploads_of, work
from web_helpers import login, set_password

from backend import accounts, create_app, tasks
from backend.db import Base
from backend.exports.jobs import export_dir, files_of, wait_for_export
from backend.imports.jobs import ImportSettings, create_job, upload_path
from backend.models import ExportJob, HealthSample, User, Workout
from backend.ratelimit import account_bucket
from backend.tokens import issue_token

__all__ = ["queue_name"]  # the fixture: a queue of the test's own on the real Redis (test_tasks)

# How to find a user's rows in each table: straight by user_id, or through the rows they hang from.
OWNED_ROWS = {
    "users": "SELECT count(*) FROM users WHERE id = :user",
    "api_tokens": "SELECT count(*) FROM api_tokens WHERE user_id = :user",
    "idempotency_records": "SELECT count(*) FROM idempotency_records WHERE user_id = :user",
    "workouts": "SELECT count(*) FROM workouts WHERE user_id = :user",
    "stages": "SELECT count(*) FROM stages JOIN workouts w ON w.id = stages.workout_id "
    "WHERE w.user_id = :user",
    "segments": "SELECT count(*) FROM segments JOIN stages s ON s.id = segments.stage_id "
    "JOIN workouts w ON w.id = s.workout_id WHERE w.user_id = :user",
    "pulse_readings": "SELECT count(*) FROM pulse_readings "
    "JOIN workouts w ON w.id = pulse_readings.workout_id WHERE w.user_id = :user",
    "stage_summaries": "SELECT count(*) FROM stage_summaries "
    "JOIN workouts w ON w.id = stage_summaries.workout_id WHERE w.user_id = :user",
    "health_samples": "SELECT count(*) FROM health_samples WHERE user_id = :user",
    "health_workouts": "SELECT count(*) FROM health_workouts WHERE user_id = :user",
    "import_jobs": "SELECT count(*) FROM import_jobs WHERE user_id = :user",
    "fitness_markers": "SELECT count(*) FROM fitness_markers WHERE user_id = :user",
    "web_sessions": "SELECT count(*) FROM web_sessions WHERE user_id = :user",
    "export_jobs": "SELECT count(*) FROM export_jobs WHERE user_id = :user",
    # Failed log-ins are counted by account name (the name need not exist): the account's bucket.
    "auth_failures": "SELECT count(*) FROM auth_failures WHERE bucket = :account",
}


def rows_of(app: Flask, api: Api) -> dict[str, int]:
    with db_of(app).session() as session:
        name = session.scalar(text("SELECT name FROM users WHERE id = :user"), {"user": api.user_id})
        params = {"user": api.user_id, "account": account_bucket(name or api.name)}
        return {table: session.scalar(text(sql), params) for table, sql in OWNED_ROWS.items()}


def totals(app: Flask) -> dict[str, int]:
    with db_of(app).session() as session:
        return {
            table: session.scalar(select(func.count()).select_from(Base.metadata.tables[table]))
            for table in OWNED_ROWS
        }


def fill(api: Api, app: Flask, label: str) -> None:
    """Put a row of this user in every table."""
    workout_id = uuid.uuid4()
    assert api.put(workout_url(workout_id), json=sample_workout()).status_code == 201
    append = api.post(
        f"{workout_url(workout_id)}/pulse",
        json={"pulse": [{"point": "after_3", "bpm": 140}]},
        headers={"Idempotency-Key": f"{label}-after-3"},
    )
    assert append.status_code == 201
    xml = export_xml(
        [
            heart_rate("2026-11-21 07:52:01 -0800", 151),
            heart_rate("2026-11-21 12:00:00 -0800", 70),
            respiratory_rate("2026-11-21 02:00:00 -0800", "2026-11-21 02:02:30 -0800", 14.5),
            hk_workout("2026-11-21 07:35:00 -0800", "2026-11-21 07:52:30 -0800"),
            *marker_records(),
        ]
    )
    assert upload(api, xml).status_code == 201
    export = api.post("/api/v1/exports?format=csv")
    assert export.status_code == 202
    assert wait_for_export(app, uuid.UUID(export.json["id"]), timeout_s=60)
    with db_of(app).session(write=True) as session, session.begin():
        issue_token(session, session.get(User, api.user_id), f"{label}'s Watch")
    set_password(app, api.user_id)
    browser = app.test_client()
    assert login(browser, label, "a wrong password").status_code == 401  # a failure of this account
    assert login(browser, label).status_code == 302  # and a dashboard session


def test_deleting_an_account_removes_every_row_of_it_and_nothing_else(
    alice: Api, bob: Api, app: Flask
) -> None:
    assert set(OWNED_ROWS) == set(Base.metadata.tables), "a new table needs its ownership rule here"
    alice.name, bob.name = "alice", "bob"
    fill(alice, app, "alice")
    fill(bob, app, "bob")
    before_alice, before_bob, before_total = rows_of(app, alice), rows_of(app, bob), totals(app)
    assert all(n > 0 for n in before_alice.values()), before_alice  # the test covers every table
    assert all(n > 0 for n in before_bob.values()), before_bob
    # (auth_failures also holds the failures' address buckets, which are nobody's account)
    owned_total = {t: before_total[t] for t in OWNED_ROWS if t != "auth_failures"}
    assert owned_total == {t: before_alice[t] + before_bob[t] for t in owned_total}
    assert before_alice["pulse_readings"] >= 4 and before_alice["health_samples"] == 3

    with db_of(app).session() as session:
        files = {api.name: files_of(export_dir(app), session, api.user_id) for api in (alice, bob)}
    assert all(file.exists() for listed in files.values() for file in listed)
    response = alice.delete("/api/v1/me")
    assert response.status_code == 204

    assert rows_of(app, alice) == dict.fromkeys(OWNED_ROWS, 0)
    assert rows_of(app, bob) == before_bob
    after = totals(app)
    assert {t: after[t] for t in owned_total} == {t: before_bob[t] for t in owned_total}
    assert alice.get("/api/v1/workouts").status_code == 401  # the token went with the account
    assert bob.get("/api/v1/me").json["workouts"] == 1
    assert not any(file.exists() for file in files["alice"]) and all(file.exists() for file in files["bob"])


def test_me_describes_the_account(alice: Api) -> None:
    alice.put(workout_url(uuid.uuid4()), json=sample_workout())
    me = alice.get("/api/v1/me").json
    assert me["name"] == "alice" and me["workouts"] == 1 and me["devices"] == 1
    assert me["dashboard_login"] is False and me["health_samples"] == me["fitness_markers"] == 0


def test_deleting_an_account_removes_its_waiting_uploads(alice: Api, app: Flask) -> None:
    settings = ImportSettings.from_app(app)
    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    job = create_job(db_of(app), alice.user_id, "apple_health", "export.zip")
    waiting = upload_path(settings, job.uuid)
    waiting.write_bytes(b"PK\x03\x04 a big export waiting for its import")
    assert alice.delete("/api/v1/me").status_code == 204
    assert not waiting.exists()


# ---- large accounts: on the task queue when there is one (backend.accounts) -----------------------------


def _export_ids(app: Flask, api: Api) -> list[str]:
    with db_of(app).session() as session:
        return [
            str(job)
            for job in session.scalars(select(ExportJob.uuid).where(ExportJob.user_id == api.user_id))
        ]


def queued_app(database_url: str, queue_name: str) -> Flask:
    """An app with the test's own queue, for which every account with data counts as large."""
    settings = {"QUEUE_URL": REDIS_URL, "QUEUE_NAME": queue_name, "ACCOUNT_INLINE_MAX_RECORDS": 1}
    settings["EXPORT_DIR"] = str(uploads_of(queue_name) / "exports")
    return create_app(app_config(database_url, IMPORT_UPLOAD_DIR=str(uploads_of(queue_name)), **settings))


def user(app: Flask, name: str) -> Api:
    user_id, token = make_user(app, name)
    api = Api(app, token, user_id)
    api.name = name
    return api


def test_with_a_queue_a_large_account_is_locked_out_at_once_then_deleted_in_batches(
    app: Flask, database_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued = queued_app(database_url, queue_name)
    carol, dave = user(queued, "carol"), user(queued, "dave")
    fill(carol, queued, "carol")
    fill(dave, queued, "dave")
    for _ in range(2):  # several workouts, so that the worker takes several batches
        assert carol.put(workout_url(uuid.uuid4()), json=sample_workout()).status_code == 201
    monkeypatch.setattr(accounts, "BATCHES", ((Workout, 1), (HealthSample, 1)))
    before_carol, before_dave = rows_of(queued, carol), rows_of(queued, dave)
    (dave_export,) = _export_ids(queued, dave)

    assert carol.delete("/api/v1/me").status_code == 202
    # Locked out at once: no token works, no dashboard session or password is left ...
    assert carol.get("/api/v1/me").status_code == 401
    assert login(queued.test_client(), "carol").status_code == 401
    locked = rows_of(queued, carol)
    assert locked["web_sessions"] == 0 and locked["users"] == 1
    # ... while the data waits for a queue worker, nothing of it deleted by the web request.
    assert locked["workouts"] == before_carol["workouts"] == 3
    assert locked["health_samples"] == before_carol["health_samples"] > 0
    queue = tasks.queue_of(queued)
    assert queue is not None and f"delete-account-{carol.user_id}" in queue.job_ids  # (after the exports)

    work(queued)
    assert rows_of(queued, carol) == dict.fromkeys(OWNED_ROWS, 0)
    assert rows_of(queued, dave) == before_dave
    # carol's export, written by the worker just before her account went, went with it; dave's is kept.
    assert [file.name.split(".")[0] for file in export_dir(queued).iterdir()] == [dave_export]
    assert dave.get("/api/v1/me").json["workouts"] == 1
    db_of(queued).dispose()


def test_a_marked_account_is_deleted_by_the_next_worker_and_an_unmarked_one_never(
    app: Flask, database_url: str, queue_name: str
) -> None:
    """A deletion whose task was lost (Redis flushed, retries used up) is queued again when a worker
    starts; a task for an account whose deletion never committed does nothing."""
    queued = queued_app(database_url, queue_name)
    carol, dave = user(queued, "carol"), user(queued, "dave")
    for api in (carol, dave):
        assert api.put(workout_url(uuid.uuid4()), json=sample_workout()).status_code == 201
    with queued.app_context():
        assert tasks.run_account_deletion(dave.user_id) is False  # not marked: the request rolled back
    assert rows_of(queued, dave)["workouts"] == 1

    with db_of(queued).session(write=True) as session, session.begin():
        accounts.lock_out(session, carol.user_id)  # marked, but its task never reached the queue
    assert tasks.recover_orphans(queued) == 1
    work(queued)
    assert rows_of(queued, carol) == dict.fromkeys(OWNED_ROWS, 0)
    assert rows_of(queued, dave)["workouts"] == 1 and dave.get("/api/v1/me").status_code == 200
    db_of(queued).dispose()


def test_without_a_queue_a_large_account_is_deleted_in_the_request(
    app: Flask, database_url: str, tmp_path: Path
) -> None:
    inline = create_app(
        app_config(database_url, ACCOUNT_INLINE_MAX_RECORDS=0, IMPORT_UPLOAD_DIR=str(tmp_path))
    )
    carol = user(inline, "carol")
    assert carol.put(workout_url(uuid.uuid4()), json=sample_workout()).status_code == 201
    assert carol.delete("/api/v1/me").status_code == 204
    assert rows_of(inline, carol) == dict.fromkeys(OWNED_ROWS, 0)
    db_of(inline).dispose()
