"""The backend under gunicorn on loopback, on SQLite and on PostgreSQL, driven by a real load generator.

    .venv/bin/python bench/backend_load.py [--users 100] [--workouts-per-user 300] [--no-postgres]

For each database (a throwaway SQLite file; a fresh database created on the local PostgreSQL server at
127.0.0.1:5432 as user postgres and dropped afterwards, when that server answers):

1. migrate the schema to revision 0002, create ``--users`` users with one device token each, and
   bulk-insert their history straight into the tables (``--workouts-per-user`` workouts of 4 stages x 19
   segments and 6 pulse readings each; through SQL, not the API, so seeding takes seconds); then
   upgrade to the head revision, which backfills whatever later revisions derive (stage summaries);
2. start ``gunicorn -c gunicorn.conf.py 'backend:create_app()'`` bound to 127.0.0.1 on a free port;
3. uploads: ``--concurrency`` client threads PUT whole new workouts (4 stages x 19 segments of 6 s every
   3 s, 6 pulse readings), at most ``--uploads`` requests or ``--seconds`` seconds;
4. reads: the same threads GET /trends/stages, then /trends/rr-vs-pulse, then /trends/weekly, then the
   first page of /workouts, each for users in turn (each holding ``--workouts-per-user`` workouts), at
   most ``--queries`` requests or ``--seconds`` per endpoint; then ``--exports`` whole JSON exports.

The client (a thread pool of http.client connections, one new connection per request: gunicorn's sync
workers close every connection) runs in its own process, so its CPU is not counted as the server's.
Latency is from sending the request to reading the whole answer. On a small shared machine throughput
and latency depend on everything else running; **server CPU per request** does much less: it is the
CPU time (user + system, from /proc, the live workers' rusage) the gunicorn workers spent during the
phase divided by the requests answered, and, on PostgreSQL, the same for the database's backend
processes serving this bench's database.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, machine, table
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from backend import migrate
from backend.db import Database, normalize_database_url, utcnow
from backend.domain import PulsePoint
from backend.models import ApiToken, PulseReading, Segment, Stage, User, Workout
from backend.tokens import TOKEN_PREFIX, hash_token
from tests.support.scratch_db import scratch_postgres_database

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
SEED_REVISION = "0002"  # the seeding writes these tables' layout; later revisions derive from them
SEGMENTS_PER_STAGE = 19  # 6 s windows every 3 s over a 60 s stage
STAGE_RR_BPM = {1: 14.0, 2: 36.0, 3: 30.0, 4: 20.0}
PULSE_BPM = {"before_1": 70, "before_2": 150, "before_3": 160, "after_3": 140, "before_4": 120, "after_4": 95}
STAGE_START_MIN = {1: 0, 2: 20, 3: 22, 4: 26}
POINT_STAGE = {"before_1": 1, "before_2": 2, "before_3": 3, "after_3": 3, "before_4": 4, "after_4": 4}


# ---- databases ------------------------------------------------------------------------------------------


def postgres_database(server_url: str):
    """A fresh database on the server for one bench run, dropped afterwards."""
    return scratch_postgres_database(server_url, prefix="respira_bench")


@contextmanager
def named_or_scratch_database(args: argparse.Namespace) -> Iterator[str]:
    """The PostgreSQL database of this run: a scratch one dropped afterwards, or a named one kept."""
    name = args.keep_postgres_db or args.reuse_postgres_db
    if name is None:
        with postgres_database(args.pg_server) as url:
            yield url
        return
    admin_url = make_url(normalize_database_url(args.pg_server))
    if args.keep_postgres_db:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    yield admin_url.set(database=name).render_as_string(hide_password=False)


def postgres_available(server_url: str) -> str | None:
    """None when the server answers, else why not."""
    engine = create_engine(normalize_database_url(server_url), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # any failure to reach it means "no PostgreSQL here"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    finally:
        engine.dispose()


def segment_rows(stage_rr: list[tuple[int, float]], seed_value: int) -> Iterator[tuple]:
    """Rows of the segments table, 19 per stage (6 s every 3 s), generated as they are inserted."""
    rng = np.random.default_rng([seed_value, 1])
    row_id = 0
    for stage_id, centre in stage_rr:
        rr = np.clip(centre + rng.normal(0, 2.5, SEGMENTS_PER_STAGE), 4, 70)
        for j in range(SEGMENTS_PER_STAGE):
            row_id += 1
            heavy = rr[j] > 30
            probs = (0.02, 0.18, 0.8) if heavy else (0.02, 0.9, 0.08)
            label = "heavy" if heavy else "normal"
            yield (row_id, stage_id, 3.0 * j, 6.0, float(rr[j]), float(rr[j]) / 10, label, *probs, 0.1)


# PostgreSQL only: the whole history generated by the server (INSERT ... SELECT FROM generate_series), no
# row crossing the socket; for 1,000 users x 1,000 workouts (76 M segments), where even COPY from Python
# spends most of its time building rows. Ids are dense and explicit, so a stage's workout and user follow
# from its id. The same shapes as `seed`: RR around each stage's centre plus the user's own offset plus
# Gaussian noise (Box-Muller on random(), after setseed: the same rows every run), clipped to 4-70.
SQL_SEED = """
SELECT setseed(0.14);
INSERT INTO workouts (id, uuid, user_id, started_at, utc_offset_min, local_date, activity, environment,
                      model_version, device, created_at, updated_at)
SELECT w, md5('bench-' || w)::uuid, (w - 1) / :per_user + 1, t, -480,
       (t AT TIME ZONE INTERVAL '-08:00')::date,
       (ARRAY['running', 'biking', 'hiit'])[(w - 1) % :per_user % 3 + 1],
       (ARRAY['indoor', 'outdoor'])[(w - 1) % :per_user % 2 + 1], 'bench', 'bench', t, t
FROM generate_series(1, :workouts) AS w,
     LATERAL (SELECT TIMESTAMPTZ '2023-01-01 07:30-08:00' + ((w - 1) % :per_user) * INTERVAL '1 day'
                     + floor(random() * 600) * INTERVAL '1 minute' AS t) AS start;
INSERT INTO stages (id, workout_id, stage, started_at, duration_s)
SELECT (w.id - 1) * 4 + s, w.id, s, w.started_at + (ARRAY[0, 20, 22, 26])[s] * INTERVAL '1 minute', 60.0
FROM workouts AS w, generate_series(1, 4) AS s;
INSERT INTO pulse_readings (id, workout_id, point, bpm, measured_at)
SELECT (w.id - 1) * 6 + p.n, w.id, p.point,
       p.bpm + 6 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()),
       w.started_at + p.minute * INTERVAL '1 minute'
FROM workouts AS w,
     (VALUES (1, 'before_1', 70, 0), (2, 'before_2', 150, 20), (3, 'before_3', 160, 22),
             (4, 'after_3', 140, 22), (5, 'before_4', 120, 26), (6, 'after_4', 95, 26))
     AS p(n, point, bpm, minute);
INSERT INTO segments (id, stage_id, start_s, duration_s, rr_bpm, respiration_count, breath_class,
                      prob_none, prob_normal, prob_heavy, noise_prob)
SELECT (sid - 1) * 19 + j + 1, sid, 3.0 * j, 6.0, rr, rr / 10,
       CASE WHEN rr > 30 THEN 'heavy' ELSE 'normal' END,
       0.02, CASE WHEN rr > 30 THEN 0.18 ELSE 0.9 END, CASE WHEN rr > 30 THEN 0.8 ELSE 0.08 END, 0.1
FROM generate_series(1, :workouts * 4) AS sid, generate_series(0, 18) AS j,
     LATERAL (SELECT least(70.0, greatest(4.0,
                 (ARRAY[14.0, 36.0, 30.0, 20.0])[(sid - 1) % 4 + 1]
                 + ((((sid - 1) / (4 * :per_user)) * 7919) % 1000 / 1000.0 - 0.5) * 6
                 + 2.5 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))) AS rr) AS value;
"""


def seed_in_database(conn: Any, n_users: int, workouts_per_user: int) -> int:
    """Generate the users' history in PostgreSQL itself (SQL_SEED); returns the number of segments."""
    params = {"per_user": workouts_per_user, "workouts": n_users * workouts_per_user}
    for statement in filter(str.strip, SQL_SEED.split(";")):
        conn.execute(text(statement), params)
    return n_users * workouts_per_user * 4 * SEGMENTS_PER_STAGE


def seed(
    url: str, n_users: int, workouts_per_user: int, seed_value: int = 0, *, in_database: bool = False
) -> tuple[list[str], dict]:
    """Users with a token each and their workout history, bulk-inserted; returns tokens and counts.

    Primary keys are given explicitly (the tables are empty), so children can name their parents
    without a round trip per row; PostgreSQL's sequences are moved past them afterwards.
    """
    db = Database(url)
    migrate.upgrade(db, SEED_REVISION)
    tokens, user_ids = [], []
    # Core, naming only the columns revision SEED_REVISION has (the models may have more by now).
    with db.engine.execution_options(respira_write=True).begin() as conn:
        for i in range(n_users):
            user = insert(User.__table__).values(name=f"bench-user-{i:03d}", created_at=utcnow())
            user_id = conn.execute(user.returning(User.id)).scalar_one()
            token = TOKEN_PREFIX + secrets.token_urlsafe(32)
            conn.execute(
                insert(ApiToken.__table__).values(
                    user_id=user_id, label="bench", token_hash=hash_token(token), prefix=token[:12]
                )
            )
            tokens.append(token)
            user_ids.append(user_id)

    started_s = time.monotonic()
    if in_database:
        if db.dialect != "postgresql" or user_ids != list(range(1, n_users + 1)):
            raise ValueError("seeding in the database needs a fresh PostgreSQL database")
        with db.engine.begin() as conn:
            n_segments = seed_in_database(conn, n_users, workouts_per_user)
            move_sequences(conn)
        n_workouts, n_pulse = n_users * workouts_per_user, n_users * workouts_per_user * len(PulsePoint)
    else:
        n_workouts, n_segments, n_pulse = insert_history(db, user_ids, workouts_per_user, seed_value)
    insert_s = time.monotonic() - started_s
    started_s = time.monotonic()
    migrate.upgrade(db)  # backfills what later revisions derive from the seeded rows
    upgrade_s = time.monotonic() - started_s
    # Planner statistics and (PostgreSQL) the visibility map, as autovacuum keeps them in a database in
    # service: without the map no scan can be index-only, however well an index covers a query.
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if db.dialect == "postgresql" else "ANALYZE"))
    db.dispose()
    counts = {
        "users": n_users,
        "workouts": n_workouts,
        "segments": n_segments,
        "pulse": n_pulse,
        "insert_s": insert_s,
        "upgrade_s": upgrade_s,
    }
    return tokens, counts


def insert_history(
    db: Database, user_ids: list[int], workouts_per_user: int, seed_value: int
) -> tuple[int, int, int]:
    """The users' workout history made in Python and bulk-inserted (COPY for PostgreSQL's segments);
    returns the numbers of workouts, segments and pulse readings."""
    rng = np.random.default_rng(seed_value)
    tz = timezone(timedelta(hours=-8))
    first_day = datetime(2023, 1, 1, 7, 30, tzinfo=tz)  # 1,000 days end before 2026
    workouts, stages, pulse = [], [], []
    stage_rr: list[tuple[int, float]] = []  # (stage id, typical RR): segments are made while inserting
    wid = sid = pid = 0
    for user_id in user_ids:
        fitness = rng.normal(0, 2)
        for k in range(workouts_per_user):
            wid += 1
            started = first_day + timedelta(days=k, minutes=int(rng.integers(0, 600)))
            workouts.append(
                {
                    "id": wid,
                    "uuid": uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | wid),
                    "user_id": user_id,
                    "started_at": started,
                    "utc_offset_min": -480,
                    "local_date": started.date(),
                    "activity": ("running", "biking", "hiit")[k % 3],
                    "environment": ("indoor", "outdoor")[k % 2],
                    "model_version": "bench",
                    "device": "bench",
                    "created_at": started,
                    "updated_at": started,
                }
            )
            for stage, centre in STAGE_RR_BPM.items():
                sid += 1
                stages.append(
                    {
                        "id": sid,
                        "workout_id": wid,
                        "stage": stage,
                        "started_at": started + timedelta(minutes=STAGE_START_MIN[stage]),
                        "duration_s": 60.0,
                    }
                )
                stage_rr.append((sid, centre + fitness))
            for point in PulsePoint:
                pid += 1
                pulse.append(
                    {
                        "id": pid,
                        "workout_id": wid,
                        "point": point.value,
                        "bpm": float(PULSE_BPM[point.value] + rng.normal(0, 6)),
                        "measured_at": started + timedelta(minutes=STAGE_START_MIN[POINT_STAGE[point.value]]),
                    }
                )
    batch = 20_000
    with db.engine.execution_options(respira_write=True).begin() as conn:
        for table_, rows in ((Workout, workouts), (Stage, stages), (PulseReading, pulse)):
            for i in range(0, len(rows), batch):
                conn.execute(insert(table_.__table__), rows[i : i + batch])
        columns = (
            "id, stage_id, start_s, duration_s, rr_bpm, respiration_count, breath_class, "
            "prob_none, prob_normal, prob_heavy, noise_prob"
        )
        raw = conn.connection.driver_connection
        if db.dialect == "postgresql":
            sql = f"COPY {Segment.__tablename__} ({columns}) FROM STDIN"
            with raw.cursor() as cur, cur.copy(sql) as copy:
                for row in segment_rows(stage_rr, seed_value):
                    copy.write_row(row)
            for name in ("workouts", "stages", "segments", "pulse_readings"):
                sequence = f"pg_get_serial_sequence('{name}', 'id')"
                conn.execute(text(f"SELECT setval({sequence}, (SELECT max(id) FROM {name}))"))
        else:
            marks = ", ".join("?" * 11)
            sql = f"INSERT INTO {Segment.__tablename__} ({columns}) VALUES ({marks})"
            raw.cursor().executemany(sql, segment_rows(stage_rr, seed_value))
    return len(workouts), len(stage_rr) * SEGMENTS_PER_STAGE, len(pulse)


def move_sequences(conn: Any) -> None:
    """PostgreSQL: the id sequences past the explicitly numbered rows, so the API's inserts succeed."""
    for name in ("workouts", "stages", "segments", "pulse_readings"):
        sequence = f"pg_get_serial_sequence('{name}', 'id')"
        conn.execute(text(f"SELECT setval({sequence}, (SELECT max(id) FROM {name}))"))


# ---- query plans -------------------------------------------------------------------------------------


def hot_queries(conn: Any) -> dict[str, Any]:
    """The statements behind the busiest endpoints, for the user with the most workouts."""
    from backend.models import ApiToken, AuthFailure
    from backend.schemas import WorkoutFilter
    from backend.trends import stage_values_query, weekly_query

    user_id, workout_uuid = conn.execute(
        select(Workout.user_id, Workout.uuid).order_by(Workout.id.desc()).limit(1)
    ).one()
    everything = WorkoutFilter()
    stage_ids = select(Stage.id).join(Workout).where(Workout.user_id == user_id).limit(100)
    newest = select(Workout.id).where(Workout.user_id == user_id).order_by(Workout.started_at.desc())
    page = [row.id for row in conn.execute(newest.limit(50))]
    return {
        "GET /trends/rr-vs-pulse (/trends/stages: the same without the two workout columns)": (
            stage_values_query(
                user_id, everything, Workout.started_at, Workout.utc_offset_min, Workout.local_date
            )
        ),
        "GET /trends/weekly": weekly_query(user_id, everything),
        "GET /workouts (first page)": select(Workout)
        .where(Workout.user_id == user_id)
        .order_by(Workout.started_at.desc(), Workout.id.desc())
        .limit(51),
        "GET /workouts: stage numbers of the page": select(Stage.workout_id, Stage.stage)
        .where(Stage.workout_id.in_(page))
        .order_by(Stage.workout_id, Stage.stage),
        "PUT /workouts/{id}: find and lock": select(Workout.id, Workout.created_at)
        .where(Workout.user_id == user_id, Workout.uuid == workout_uuid)
        .with_for_update(),
        "every request: the token": select(ApiToken.id, ApiToken.user_id).where(
            ApiToken.token_hash == "0" * 64, ApiToken.revoked_at.is_(None)
        ),
        "every request: the address's failed authentications": select(func.count()).where(
            AuthFailure.bucket == "addr:127.0.0.1", AuthFailure.failed_at > utcnow() - timedelta(minutes=1)
        ),
        "GET /export: segments of 100 stages": select(Segment).where(Segment.stage_id.in_(stage_ids)),
    }


def explain(url: str) -> str:
    """EXPLAIN of the hot queries: ANALYZE on PostgreSQL (plan and time), QUERY PLAN on SQLite."""
    engine = create_engine(normalize_database_url(url), poolclass=NullPool)
    out = []
    with engine.connect() as conn:
        for label, query in hot_queries(conn).items():
            sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
            if engine.dialect.name == "postgresql":
                plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}").scalars().all()
            else:
                plan = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
            out.append(f"-- {label}\n" + "\n".join(f"   {line}" for line in plan))
    engine.dispose()
    return "\n".join(out)


# ---- the server -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str, timeout_s: float = 5.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


@contextmanager
def gunicorn(url: str, log_path: Path, workers: int | None) -> Iterator[tuple[int, int]]:
    """gunicorn with the project's config on 127.0.0.1:<free port>; yields (port, master pid) once
    /readyz is 200."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "RESPIRA_BIND": f"127.0.0.1:{port}",
        "RESPIRA_SECRET_KEY": secrets.token_hex(32),
    }
    if workers:
        env["WEB_CONCURRENCY"] = str(workers)
    cmd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "backend:create_app()"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode}; see {log_path}")
            try:
                if get(port, "/readyz") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn not ready after 60 s; see {log_path}")
            time.sleep(0.2)
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- server CPU --------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process (its rusage, read from /proc), None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def children(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    pids.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
    return pids


class CpuMeter:
    """CPU spent by a changing set of processes between `start` and `stop` (gunicorn workers; the
    PostgreSQL backends of one database). A process that ends during the phase loses its share, and is
    reported as `lost`, so a recycled worker cannot quietly make the figure look better."""

    def __init__(self, list_pids: Callable[[], list[int]]) -> None:
        self.list_pids = list_pids
        self.start_cpu: dict[int, float] = {}

    def start(self) -> None:
        self.start_cpu = {pid: cpu for pid in self.list_pids() if (cpu := cpu_s(pid)) is not None}

    def stop(self) -> tuple[float, int]:
        total, lost = 0.0, 0
        pids = set(self.list_pids()) | set(self.start_cpu)
        for pid in pids:
            now = cpu_s(pid)
            if now is None:
                lost += 1
                continue
            total += now - self.start_cpu.get(pid, 0.0)
        return total, lost


def postgres_backends(url: str) -> Callable[[], list[int]]:
    """The server processes serving connections to the database of `url` (other databases excluded)."""
    engine = create_engine(normalize_database_url(url), poolclass=NullPool)
    name = engine.url.database

    def pids() -> list[int]:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"),
                {"name": name},
            )
            return [row.pid for row in rows]

    return pids


# ---- the load generator (runs in its own process) ----------------------------------------------------


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    def percentile_ms(self, q: float) -> str:
        return f"{np.percentile(self.latencies_s, q) * 1000:.0f}" if self.latencies_s else "-"


@dataclass(frozen=True)
class Phase:
    """What the client process sends: PUT `bodies` as new workouts, or GET `path`; round-robin tokens."""

    tokens: list[str]
    path: str | None = None  # a trends path; None: uploads
    bodies: list[bytes] = field(default_factory=list)

    def request(self, n: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        if self.path is None:
            headers = {"Authorization": f"Bearer {self.tokens[n % len(self.tokens)]}"}
            headers["Content-Type"] = "application/json"
            return "PUT", f"/api/v1/workouts/{uuid.uuid4()}", self.bodies[n % len(self.bodies)], headers
        # a different user each time, in a fixed order
        return "GET", self.path, None, {"Authorization": f"Bearer {self.tokens[(n * 37) % len(self.tokens)]}"}


def drive(port: int, phase: Phase, concurrency: int, max_requests: int, max_seconds: float) -> LoadResult:
    """Send requests from ``concurrency`` threads until ``max_requests`` are done or time is up."""
    result = LoadResult()
    lock = threading.Lock()
    issued = iter(range(max_requests))
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        while time.monotonic() < deadline:
            with lock:
                n = next(issued, None)
            if n is None:
                return
            method, path, body, headers = phase.request(n)
            started = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except OSError:
                status = 0  # connection refused/reset: counted as an error
            finally:
                conn.close()
            took = time.perf_counter() - started
            with lock:
                result.latencies_s.append(took)
                result.statuses[status] = result.statuses.get(status, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.elapsed_s = time.monotonic() - start
    return result


def workout_body(rng: random.Random) -> bytes:
    """A full workout as the app uploads it: 4 stages x 19 segments, 6 pulse readings."""
    tz = timezone(timedelta(hours=-8))
    start = datetime(2026, 1, 5, 7, 30, tzinfo=tz) + timedelta(minutes=rng.randrange(0, 100_000))  # past
    stages = []
    for stage, centre in STAGE_RR_BPM.items():
        segments = []
        for j in range(SEGMENTS_PER_STAGE):
            rr = round(centre + rng.gauss(0, 2.5), 2)
            segments.append(
                {
                    "start_s": 3.0 * j,
                    "duration_s": 6.0,
                    "rr_bpm": rr,
                    "respiration_count": round(rr / 10, 2),
                    "breath_class": "heavy" if rr > 30 else "normal",
                    "breath_probs": [0.02, 0.9, 0.08],
                    "noise_prob": 0.1,
                }
            )
        started = (start + timedelta(minutes=STAGE_START_MIN[stage])).isoformat()
        stages.append({"stage": stage, "started_at": started, "segments": segments})
    pulse = [
        {
            "point": point,
            "bpm": bpm + rng.randrange(-5, 6),
            "measured_at": (start + timedelta(minutes=STAGE_START_MIN[POINT_STAGE[point]])).isoformat(),
        }
        for point, bpm in PULSE_BPM.items()
    ]
    body = {
        "started_at": start.isoformat(),
        "activity": "running",
        "environment": "outdoor",
        "model_version": "bench",
        "stages": stages,
        "pulse": pulse,
    }
    return json.dumps(body).encode()


TRENDS = ("/api/v1/trends/stages", "/api/v1/trends/rr-vs-pulse", "/api/v1/trends/weekly")
LIST = "/api/v1/workouts?limit=50"
EXPORT = "/api/v1/export?format=json"  # a user's whole history, streamed


def reuse(url: str, n_users: int) -> list[str]:
    """A database seeded by an earlier run (--keep-postgres-db): migrated to the head revision, and a new
    token for each of its first ``n_users`` users (the earlier run's tokens were never stored in clear)."""
    db = Database(url)
    migrate.upgrade(db)
    tokens = []
    with db.engine.execution_options(respira_write=True).begin() as conn:
        user_ids = conn.execute(select(User.id).order_by(User.id).limit(n_users)).scalars().all()
        for user_id in user_ids:
            token = TOKEN_PREFIX + secrets.token_urlsafe(32)
            conn.execute(
                insert(ApiToken.__table__).values(
                    user_id=user_id, label="bench", token_hash=hash_token(token), prefix=token[:12]
                )
            )
            tokens.append(token)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    db.dispose()
    if len(tokens) < n_users:
        raise ValueError(f"the database holds {len(tokens)} users, fewer than --users {n_users}")
    return tokens


def run_database(
    name: str, url: str, args: argparse.Namespace, log_dir: Path, client: ProcessPoolExecutor
) -> list[list[str]]:
    if name == "PostgreSQL" and args.reuse_postgres_db:
        print(f"[{name}] reusing the seeded database {args.reuse_postgres_db}", flush=True)
        tokens = reuse(url, args.users)
    else:
        print(f"[{name}] seeding {args.users} users x {args.workouts_per_user} workouts ...", flush=True)
        t0 = time.monotonic()
        in_database = args.seed_in_database and name == "PostgreSQL"
        tokens, counts = seed(url, args.users, args.workouts_per_user, in_database=in_database)
        print(
            f"[{name}] seeded {counts['workouts']:,} workouts, {counts['segments']:,} segments, "
            f"{counts['pulse']:,} pulse readings in {time.monotonic() - t0:.1f} s "
            f"(bulk inserts {counts['insert_s']:.1f} s, "
            f"migrations after seeding {counts['upgrade_s']:.1f} s)",
            flush=True,
        )
    if args.explain:
        print(f"[{name}] query plans:\n{explain(url)}", flush=True)
    rows = []
    with gunicorn(url, log_dir / f"gunicorn-{name}.log", args.workers) as (port, master):
        rng = random.Random(0)
        upload = Phase(tokens, bodies=[workout_body(rng) for _ in range(min(args.uploads, 500))])
        # warm-up: connections, caches, first requests of each worker
        client.submit(drive, port, replace(upload, bodies=upload.bodies[:10]), 2, 10, 30).result()
        reads = args.paths or [*TRENDS, LIST]
        for path in (*reads, EXPORT):
            client.submit(drive, port, Phase(tokens, path), 2, 4, 30).result()
        workers = CpuMeter(lambda: children(master))
        database = CpuMeter(postgres_backends(url)) if name == "PostgreSQL" else None
        phases = [("PUT /workouts/{id} (whole workout)", upload, args.uploads)]
        for path in reads:
            phases.append((f"GET {path.removeprefix('/api/v1')}", Phase(tokens, path), args.queries))
        if args.exports:
            phases.append((f"GET {EXPORT.removeprefix('/api/v1')}", Phase(tokens, EXPORT), args.exports))
        for label, phase, count in phases:
            workers.start()
            if database:
                database.start()
            res = client.submit(drive, port, phase, args.concurrency, count, args.seconds).result()
            worker_cpu_s, lost = workers.stop()
            db_cpu_s = database.stop()[0] if database else None
            errors = sum(n for s, n in res.statuses.items() if not 200 <= s < 300)
            answered = max(len(res.latencies_s), 1)
            rows.append(
                [
                    name,
                    label,
                    f"{len(res.latencies_s)}",
                    f"{res.ok / res.elapsed_s:.1f}",
                    res.percentile_ms(50),
                    res.percentile_ms(95),
                    res.percentile_ms(99),
                    f"{worker_cpu_s / answered * 1000:.1f}" + (f" ({lost} workers lost)" if lost else ""),
                    "-" if db_cpu_s is None else f"{db_cpu_s / answered * 1000:.1f}",
                    f"{errors}" + (f" {dict(res.statuses)}" if errors else ""),
                ]
            )
            print(f"[{name}] {label}: {rows[-1][3]}/s, {rows[-1][7]} ms worker CPU each", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--workouts-per-user", type=int, default=300)
    parser.add_argument("--uploads", type=int, default=600, help="upload requests at most (600)")
    parser.add_argument("--queries", type=int, default=150, help="requests per trends endpoint (150)")
    parser.add_argument("--exports", type=int, default=40, help="GET /export?format=json requests (40)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit of each phase (60 s)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (8)")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: gunicorn.conf.py's rule)")
    parser.add_argument("--pg-server", default=PG_SERVER, help=f"PostgreSQL admin URL ({PG_SERVER})")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--explain", action="store_true", help="print the hot queries' plans after seeding")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument(
        "--seed-in-database",
        action="store_true",
        help="PostgreSQL: generate the history in the server (SQL), for 1,000 x 1,000",
    )
    parser.add_argument(
        "--keep-postgres-db",
        metavar="NAME",
        help="PostgreSQL: seed into a new database NAME and keep it afterwards (for --reuse-postgres-db)",
    )
    parser.add_argument(
        "--reuse-postgres-db",
        metavar="NAME",
        help="PostgreSQL: no seeding; run the phases on database NAME, kept by an earlier --keep-postgres-db",
    )
    parser.add_argument(
        "--paths",
        nargs="+",
        metavar="PATH",
        help="the read endpoints to time, replacing the trends and list defaults (e.g. "
        "'/api/v1/trends/stages?format=columns'); repeatable",
    )
    args = parser.parse_args()
    workers = args.workers or multiprocessing.cpu_count() * 2 + 1
    print(f"machine: {machine()}")
    print(
        f"gunicorn: {workers} sync workers, 127.0.0.1; client: {args.concurrency} threads in a separate "
        f"process, at most "
        f"{args.uploads} uploads / {args.queries} GETs per read endpoint / {args.exports} exports or "
        f"{args.seconds:g} s a phase\n"
    )
    rows: list[list[str]] = []
    spawn = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="respira-bench-load-") as tmp,
        ProcessPoolExecutor(1, mp_context=spawn) as client,
    ):
        work = Path(tmp)
        if not args.no_sqlite:
            rows += run_database("SQLite", f"sqlite:///{work / 'bench.sqlite3'}", args, work, client)
        why_not = "--no-postgres given" if args.no_postgres else postgres_available(args.pg_server)
        if why_not is None:
            with named_or_scratch_database(args) as url:
                rows += run_database("PostgreSQL", url, args, work, client)
        else:
            print(f"[PostgreSQL] skipped: {why_not}")
    print()
    headers = ["database", "requests", "sent", "ok per s", "p50 ms", "p95 ms", "p99 ms"]
    headers += ["worker CPU ms/req", "PostgreSQL CPU ms/req", "errors"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
