"""The backend under gunicorn on loopback, on SQLite and on PostgreSQL, driven by a real load generator.

    .venv/bin/python bench/backend_load.py [--users 100] [--workouts-per-user 300] [--no-postgres]

For each database (a throwaway SQLite file; a fresh database created on the local PostgreSQL server at
127.0.0.1:5432 as user postgres and dropped afterwards, when that server answers):

1. migrate the schema, create ``--users`` users with one device token each, and bulk-insert their
   history straight into the tables (``--workouts-per-user`` workouts of 4 stages x 19 segments and
   6 pulse readings each; through SQL, not the API, so seeding takes seconds);
2. start ``gunicorn -c gunicorn.conf.py 'backend:create_app()'`` bound to 127.0.0.1 on a free port;
3. uploads: ``--concurrency`` client threads PUT whole new workouts (4 stages x 19 segments of 6 s every
   3 s, 6 pulse readings), at most ``--uploads`` requests or ``--seconds`` seconds;
4. trends: the same threads GET /trends/stages, then /trends/rr-vs-pulse, then /trends/weekly, each
   for users in turn (each holding ``--workouts-per-user`` workouts), at most ``--queries`` requests
   or ``--seconds`` per endpoint.

The client is a thread pool of http.client connections (one new connection per request: gunicorn's sync
workers close every connection). It runs on the same machine as the server, so on a 2-core machine the
client's own CPU use is part of what limits the rate. Latency is from sending the request to reading
the whole answer.
"""

from __future__ import annotations

import argparse
import http.client
import json
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from common import ROOT, machine, table
from sqlalchemy import create_engine, insert, select, text

from backend import migrate
from backend.db import Database, normalize_database_url, scratch_postgres_database
from backend.domain import PulsePoint
from backend.models import PulseReading, Segment, Stage, User, Workout
from backend.tokens import issue_token

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
SEGMENTS_PER_STAGE = 19  # 6 s windows every 3 s over a 60 s stage
STAGE_RR_BPM = {1: 14.0, 2: 36.0, 3: 30.0, 4: 20.0}
PULSE_BPM = {"before_1": 70, "before_2": 150, "before_3": 160, "after_3": 140, "before_4": 120, "after_4": 95}
STAGE_START_MIN = {1: 0, 2: 20, 3: 22, 4: 26}
POINT_STAGE = {"before_1": 1, "before_2": 2, "before_3": 3, "after_3": 3, "before_4": 4, "after_4": 4}


# ---- databases ------------------------------------------------------------------------------------------


def postgres_database(server_url: str):
    """A fresh database on the server for one bench run, dropped afterwards."""
    return scratch_postgres_database(server_url, prefix="respira_bench")


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


def seed(url: str, n_users: int, workouts_per_user: int, seed_value: int = 0) -> tuple[list[str], dict]:
    """Users with a token each and their workout history, bulk-inserted; returns tokens and counts.

    Primary keys are given explicitly (the tables are empty), so children can name their parents
    without a round trip per row; PostgreSQL's sequences are moved past them afterwards.
    """
    db = Database(url)
    migrate.upgrade(db)
    tokens = []
    with db.session(write=True) as session, session.begin():
        for i in range(n_users):
            user = User(name=f"bench-user-{i:03d}")
            session.add(user)
            tokens.append(issue_token(session, user, "bench")[1])
        session.flush()
        user_ids = list(session.scalars(select(User.id).order_by(User.id)))

    rng = np.random.default_rng(seed_value)
    tz = timezone(timedelta(hours=-8))
    first_day = datetime(2025, 1, 1, 7, 30, tzinfo=tz)
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
    started_s = time.monotonic()
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
    with db.engine.connect() as conn:  # planner statistics, as a database in service would have
        conn.execute(text("ANALYZE"))
        conn.commit()
    db.dispose()
    counts = {
        "users": n_users,
        "workouts": len(workouts),
        "segments": len(stage_rr) * SEGMENTS_PER_STAGE,
        "pulse": len(pulse),
        "insert_s": time.monotonic() - started_s,
    }
    return tokens, counts


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
def gunicorn(url: str, log_path: Path, workers: int | None) -> Iterator[int]:
    """gunicorn with the project's config on 127.0.0.1:<free port>; yields the port once /readyz is 200."""
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
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- the load generator -----------------------------------------------------------------------------------


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


Request = tuple[str, str, bytes | None, dict[str, str]]


def drive(port: int, make_request: Callable[[int], Request], concurrency: int, max_requests: int,
          max_seconds: float) -> LoadResult:  # fmt: skip
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
            method, path, body, headers = make_request(n)
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
    start = datetime(2026, 11, 21, 7, 30, tzinfo=tz) + timedelta(minutes=rng.randrange(0, 100_000))
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


def run_database(name: str, url: str, args: argparse.Namespace, log_dir: Path) -> list[list[str]]:
    print(f"[{name}] seeding {args.users} users x {args.workouts_per_user} workouts ...", flush=True)
    t0 = time.monotonic()
    tokens, counts = seed(url, args.users, args.workouts_per_user)
    print(
        f"[{name}] seeded {counts['workouts']:,} workouts, {counts['segments']:,} segments, "
        f"{counts['pulse']:,} pulse readings in {time.monotonic() - t0:.1f} s "
        f"(bulk inserts {counts['insert_s']:.1f} s)",
        flush=True,
    )
    rows = []
    with gunicorn(url, log_dir / f"gunicorn-{name}.log", args.workers) as port:
        rng = random.Random(0)
        bodies = [workout_body(rng) for _ in range(min(args.uploads, 500))]

        def upload(n: int) -> Request:
            token = tokens[n % len(tokens)]
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            return "PUT", f"/api/v1/workouts/{uuid.uuid4()}", bodies[n % len(bodies)], headers

        def trends(path: str) -> Callable[[int], Request]:
            def make(n: int) -> Request:  # a different user each time, in a fixed order
                return "GET", path, None, {"Authorization": f"Bearer {tokens[(n * 37) % len(tokens)]}"}

            return make

        drive(port, upload, 2, 10, 30)  # warm-up: connections, caches, first requests of each worker
        for path in TRENDS:
            drive(port, trends(path), 2, 4, 30)
        phases = [("PUT /workouts/{id} (whole workout)", upload, args.uploads)]
        phases += [(f"GET {path.removeprefix('/api/v1')}", trends(path), args.queries) for path in TRENDS]
        for label, make, count in phases:
            res = drive(port, make, args.concurrency, count, args.seconds)
            errors = sum(n for s, n in res.statuses.items() if not 200 <= s < 300)
            rows.append(
                [
                    name,
                    label,
                    f"{len(res.latencies_s)}",
                    f"{res.ok / res.elapsed_s:.1f}",
                    res.percentile_ms(50),
                    res.percentile_ms(95),
                    res.percentile_ms(99),
                    f"{errors}" + (f" {dict(res.statuses)}" if errors else ""),
                ]
            )
            print(f"[{name}] {label}: {rows[-1][3]}/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--workouts-per-user", type=int, default=300)
    parser.add_argument("--uploads", type=int, default=600, help="upload requests at most (600)")
    parser.add_argument("--queries", type=int, default=150, help="requests per trends endpoint (150)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit of each phase (60 s)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads (8)")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: gunicorn.conf.py's rule)")
    parser.add_argument("--pg-server", default=PG_SERVER, help=f"PostgreSQL admin URL ({PG_SERVER})")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    import multiprocessing

    workers = args.workers or multiprocessing.cpu_count() * 2 + 1
    print(f"machine: {machine()}")
    print(
        f"gunicorn: {workers} sync workers, 127.0.0.1; client: {args.concurrency} threads, at most "
        f"{args.uploads} uploads / {args.queries} GETs per trends endpoint or {args.seconds:g} s a phase\n"
    )
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="respira-bench-load-") as tmp:
        work = Path(tmp)
        rows += run_database("SQLite", f"sqlite:///{work / 'bench.sqlite3'}", args, work)
        why_not = "--no-postgres given" if args.no_postgres else postgres_available(args.pg_server)
        if why_not is None:
            with postgres_database(args.pg_server) as url:
                rows += run_database("PostgreSQL", url, args, work)
        else:
            print(f"[PostgreSQL] skipped: {why_not}")
    print()
    headers = ["database", "requests", "sent", "ok per s", "p50 ms", "p95 ms", "p99 ms", "errors"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
