"""Where a request's CPU goes: uploads and trends run in-process (Flask test client), under cProfile.

    .venv/bin/python bench/backend_profile.py [--users 20] [--workouts-per-user 300] [--requests 200]
                                              [--no-postgres] [--top 25] [--paths PATH ...]

For each database (a throwaway SQLite file; a fresh database on the local PostgreSQL server when it
answers), seed like bench/backend_load.py, then send ``--requests`` uploads (PUT of a whole new workout)
and as many GETs of each trends endpoint through the test client, in this one process. It prints the
CPU time per request (``time.process_time``: this process only, so other work on the machine hardly
moves it; on PostgreSQL the server's own CPU is not included, see backend_load.py for that) measured
without the profiler, then the profile's top functions by cumulative and by own time.

No HTTP server, no sockets: what is left is the application's own cost (Flask, validation, SQLAlchemy,
the driver, JSON), which is what a worker spends on top of gunicorn's parsing of the request.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from backend_load import LIST, PG_SERVER, TRENDS, postgres_available, postgres_database, seed, workout_body
from common import machine

from backend import create_app


def run(name: str, url: str, args: argparse.Namespace) -> None:
    tokens, counts = seed(url, args.users, args.workouts_per_user)
    print(f"[{name}] seeded {counts['workouts']:,} workouts", flush=True)
    app = create_app({"DATABASE_URL": url, "LOG_LEVEL": "WARNING", "TESTING": True})
    client = app.test_client()
    rng = random.Random(0)
    bodies = [workout_body(rng) for _ in range(50)]

    def upload(n: int) -> None:
        token = tokens[n % len(tokens)]
        response = client.put(
            f"/api/v1/workouts/{uuid.uuid4()}",
            data=bodies[n % len(bodies)],
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        assert response.status_code == 201, response.get_data(as_text=True)

    def getter(path: str) -> Callable[[int], None]:
        def get(n: int) -> None:
            response = client.get(path, headers={"Authorization": f"Bearer {tokens[(n * 37) % len(tokens)]}"})
            assert response.status_code == 200, response.get_data(as_text=True)

        return get

    phases: list[tuple[str, Callable[[int], None]]] = [("PUT /workouts/{id}", upload)]
    reads = args.paths or [*TRENDS, LIST]
    phases += [(f"GET {path.removeprefix('/api/v1')}", getter(path)) for path in reads]
    for label, send in phases:
        for n in range(10):  # warm-up: connections, statement caches
            send(n)
        started = time.process_time()
        for n in range(args.requests):
            send(n)
        per_request_ms = (time.process_time() - started) / args.requests * 1000
        print(f"[{name}] {label}: {per_request_ms:.2f} ms CPU per request (in-process, no profiler)")
        if not args.top:
            continue
        profile = cProfile.Profile()
        profile.enable()
        for n in range(args.requests):
            send(n)
        profile.disable()
        for order in ("cumulative", "tottime"):
            out = io.StringIO()
            stats = pstats.Stats(profile, stream=out).strip_dirs().sort_stats(order)
            stats.print_stats(args.top)
            print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))
    app.extensions["respira.db"].dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--workouts-per-user", type=int, default=300)
    parser.add_argument("--requests", type=int, default=200, help="requests per phase (200)")
    parser.add_argument("--top", type=int, default=25, help="functions shown per profile (25; 0: no profile)")
    parser.add_argument("--pg-server", default=PG_SERVER)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument(
        "--paths", nargs="+", metavar="PATH", help="the GETs to time, replacing the trends and list defaults"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="respira-bench-profile-") as tmp:
        if args.only != "postgresql":
            run("SQLite", f"sqlite:///{Path(tmp) / 'profile.sqlite3'}", args)
        why_not = "--no-postgres given" if args.no_postgres else postgres_available(args.pg_server)
        if args.only != "sqlite" and why_not is None:
            with postgres_database(args.pg_server) as url:
                run("PostgreSQL", url, args)
        elif args.only != "sqlite":
            print(f"[PostgreSQL] skipped: {why_not}")


if __name__ == "__main__":
    main()
