"""Faults: a worker killed mid-upload, the database going away, identical uploads racing.

Everything destructive happens on databases these tests make themselves: an SQLite file in a temporary
folder, or a throwaway PostgreSQL cluster (initdb + pg_ctl into a temporary folder, on a free loopback
port), never the shared server. The PostgreSQL tests skip, saying why, when its binaries are absent.

The kill is made deterministic by a hold that this test installs itself (tests/support/faults.py: a
SQLAlchemy commit listener on the app's engine, in the app factory gunicorn is given): the upload
writes its rows, announces itself and waits before COMMIT; the test kills exactly that worker. Waiting
is always polling for a condition with a bounded timeout.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest
from api_helpers import app_config, make_user, sample_workout, workout_url
from sqlalchemy import create_engine, func, select, text

from backend import create_app, migrate
from backend.db import EXTENSION_KEY, Database
from backend.models import PulseReading, Segment, Stage, Workout
from backend.problems import PROBLEM_MIMETYPE
from tests.support import faults

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout_s: float = 30.0) -> T:
    """Poll until `condition()` is truthy (returning it); fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


# ---- a throwaway PostgreSQL cluster ---------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The newest PostgreSQL server binaries (PG_BIN overrides), or None."""
    candidates = [os.environ["PG_BIN"]] if os.environ.get("PG_BIN") else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))[::-1]
    for folder in map(Path, candidates):
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


PG_BIN = postgres_bin()
needs_postgres = pytest.mark.skipif(
    PG_BIN is None, reason="PostgreSQL server binaries (initdb, pg_ctl) not found; set PG_BIN to their folder"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """initdb'd into a temporary folder, listening on 127.0.0.1:<free port>; PostgreSQL refuses to run as
    root, so as root it runs as the `postgres` user, in a folder that user owns."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="respira-faults-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, program: str, *args: str) -> None:
        cmd = [*self.as_user, str(self.bin_dir / program), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr or proc.stdout}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.folder / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"faults_{uuid.uuid4().hex[:8]}"
        admin = create_engine(Database(self.url()).url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return self.url(name)

    def destroy(self) -> None:
        with suppress(RuntimeError):  # already stopped
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if PG_BIN is None:
        pytest.skip("PostgreSQL server binaries not found")
    made = Cluster(PG_BIN)
    try:
        yield made
    finally:
        made.destroy()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each kind, made for this test alone."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'faults.sqlite3'}"
    else:
        url = request.getfixturevalue("cluster").create_database()
    db = Database(url)
    migrate.upgrade(db)
    db.dispose()
    return url


def user_token(url: str) -> str:
    app = create_app(app_config(url))
    try:
        return make_user(app, f"faults-{uuid.uuid4().hex[:6]}", "iPhone")[1]
    finally:
        app.extensions[EXTENSION_KEY].dispose()


def counts(url: str) -> dict[str, int]:
    db = Database(url)
    try:
        with db.session() as session:
            return {
                model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
                for model in (Workout, Stage, Segment, PulseReading)
            }
    finally:
        db.dispose()


# ---- a real gunicorn server -----------------------------------------------------------------------------


@contextmanager
def gunicorn(
    url: str, log_path: Path, workers: int, app: str = "backend:create_app()", **env: str
) -> Iterator[int]:
    """gunicorn with the project's config serving `app` on 127.0.0.1:<free port>; yields the port once
    /readyz is 200."""
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        "RESPIRA_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(workers),
        "RESPIRA_SECRET_KEY": secrets.token_hex(32),
        **env,
    }
    cmd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", app]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"gunicorn exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            return request(port, "GET", "/readyz")[0] == 200
        except OSError:
            return False

    try:
        wait_for(ready, "gunicorn to answer /readyz with 200", 60)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def request(port: int, method: str, path: str, body: Any = None, token: str | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
    """One HTTP request on a new connection; (status, parsed JSON body or None)."""
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def full_workout() -> dict[str, Any]:
    """Four stages of 19 segments and all six pulse points: enough rows for a partial write to show."""
    body = sample_workout()
    starts = ["07:30", "07:52", "07:53", "07:57"]
    body["stages"] = [
        {
            "stage": stage,
            "started_at": f"2026-11-21T{starts[stage - 1]}:00-08:00",
            "segments": [
                {"start_s": 3.0 * j, "duration_s": 6.0, "rr_bpm": 10.0 + stage * 5 + j / 10}
                for j in range(19)
            ],
        }
        for stage in (1, 2, 3, 4)
    ]
    points = ["before_1", "before_2", "before_3", "after_3", "before_4", "after_4"]
    body["pulse"] = [{"point": p, "bpm": 70 + 10 * i} for i, p in enumerate(points)]
    return body


FULL = {"workouts": 1, "stages": 4, "segments": 76, "pulse_readings": 6}
EMPTY = dict.fromkeys(FULL, 0)


# ---- (a) a worker killed in the middle of an upload -----------------------------------------------------


def write_transaction_open(url: str) -> bool:
    """Whether another connection holds an open write transaction (PostgreSQL: one that inserted into
    every workout table; SQLite only tells that its write lock is held)."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")  # refused at once while another writer holds the lock
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc), exc
            return True
        finally:
            conn.close()  # also rolls back our empty transaction
        return False
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            tables = conn.execute(
                text(
                    "SELECT DISTINCT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE a.datname = current_database() "
                    "AND a.state = 'idle in transaction' AND l.mode = 'RowExclusiveLock' AND c.relkind = 'r'"
                )
            ).scalars()
            return {"workouts", "stages", "segments", "pulse_readings"} <= set(tables)
    finally:
        db.dispose()


def test_worker_killed_mid_upload_leaves_no_partial_workout(database: str, tmp_path: Path) -> None:
    token = user_token(database)
    holds = tmp_path / "holds"
    holds.mkdir()
    url, body = workout_url(uuid.uuid4()), full_workout()
    held_app, hold = "tests.support.faults:create_app()", {faults.HOLD_DIR_ENV: str(holds)}
    with gunicorn(database, tmp_path / "gunicorn.log", 1, held_app, **hold) as port:
        (holds / "hold").touch()  # the next write transaction stops before COMMIT
        outcome: dict[str, Any] = {}

        def upload() -> None:
            try:
                outcome["status"] = request(port, "PUT", url, body, token)[0]
            except OSError as exc:  # the worker died with the connection open
                outcome["error"] = exc

        client = threading.Thread(target=upload)
        client.start()
        held = wait_for(lambda: next(holds.glob("held-*"), None), "the upload to reach the hold")
        worker_pid = int(held.name.removeprefix("held-"))
        assert write_transaction_open(database), "the held upload should have written uncommitted rows"

        os.kill(worker_pid, signal.SIGKILL)
        client.join(timeout=60)
        assert not client.is_alive()
        assert "status" not in outcome, f"the killed upload got an answer: {outcome}"
        wait_for(lambda: not write_transaction_open(database), "the killed worker's transaction to end")
        assert counts(database) == EMPTY

        # gunicorn starts a new worker; the client's retry stores the whole workout, once.
        status, stored = wait_for(lambda: retry(port, url, body, token), "a retry to be answered", 60)
        assert status == 201, stored
        assert counts(database) == FULL
        held.unlink()


def retry(port: int, url: str, body: Any, token: str) -> tuple[int, Any] | None:
    try:
        return request(port, "PUT", url, body, token)
    except OSError:
        return None  # no worker listening yet


# ---- (b) the database goes away and comes back ----------------------------------------------------------


@needs_postgres
def test_database_down_answers_503_and_recovers(cluster: Cluster) -> None:
    url = cluster.create_database()
    db = Database(url)
    migrate.upgrade(db)
    db.dispose()
    app = create_app(app_config(url))
    token = make_user(app, "downtime", "iPhone")[1]
    client = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    first = workout_url(uuid.uuid4())
    assert client.put(first, json=sample_workout(), headers=auth).status_code == 201
    assert client.get("/readyz").status_code == 200

    cluster.stop()
    try:
        for method, path, body in (
            ("GET", "/api/v1/workouts", None),
            ("GET", first, None),
            ("PUT", workout_url(uuid.uuid4()), sample_workout()),
            ("GET", "/api/v1/trends/stages", None),
        ):
            response = client.open(path, method=method, json=body, headers=auth)
            assert response.status_code == 503, (method, path, response.get_data(as_text=True))
            assert response.mimetype == PROBLEM_MIMETYPE
            assert response.json["status"] == 503
            assert response.json["instance"] == path
            assert response.headers["Retry-After"].isdigit()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.mimetype == PROBLEM_MIMETYPE
        assert client.get("/healthz").status_code == 200  # the process itself is alive
    finally:
        cluster.start()

    assert client.get("/readyz").status_code == 200
    assert client.get(first, headers=auth).status_code == 200
    second = workout_url(uuid.uuid4())
    assert client.put(second, json=sample_workout(), headers=auth).status_code == 201
    listed = client.get("/api/v1/workouts", headers=auth).json["workouts"]
    assert len(listed) == 2
    app.extensions[EXTENSION_KEY].dispose()


# ---- (c) the same upload retried concurrently -----------------------------------------------------------

RACERS = 6


def race(send: Callable[[], tuple[int, Any]]) -> list[tuple[int, Any]]:
    """`send()` from RACERS threads released together; their (status, body) answers."""
    barrier = threading.Barrier(RACERS)
    answers: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        answer = send()
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=run) for _ in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return answers


def test_concurrent_retries_of_one_upload_leave_exactly_one_workout(database: str, tmp_path: Path) -> None:
    token = user_token(database)
    url, body = workout_url(uuid.uuid4()), full_workout()
    with gunicorn(database, tmp_path / "gunicorn.log", 3) as port:
        statuses = [status for status, _ in race(lambda: request(port, "PUT", url, body, token))]
        assert len(statuses) == RACERS
        assert set(statuses) <= {200, 201} and statuses.count(201) == 1, statuses  # created once, replaced
        assert counts(database) == FULL

        # Appends retried with one Idempotency-Key: applied once, every retry gets the first answer.
        extra = {"segments": [{"start_s": 1.5 + 3 * j, "duration_s": 3.0, "rr_bpm": 20.0} for j in range(5)]}
        key = {"Idempotency-Key": f"stage-1-{uuid.uuid4().hex}"}
        answers = race(lambda: request(port, "POST", f"{url}/stages/1/segments", extra, token, key))
        assert [status for status, _ in answers] == [201] * RACERS, answers
        assert all(answer == answers[0][1] for _, answer in answers)
        assert answers[0][1]["segment_count"] == 19 + 5
        assert counts(database) == FULL | {"segments": FULL["segments"] + 5}
