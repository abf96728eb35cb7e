"""Where one trends request's time goes: the SQL (with the driver's row decoding), building the answer in
Python, encoding the JSON, and the rest of the request (Flask, authentication, the response).

    .venv/bin/python bench/trends_breakdown.py [--users 5] [--workouts-per-user 1000] [--requests 30]
    .venv/bin/python bench/trends_breakdown.py --database-url postgresql://postgres@127.0.0.1:5432/NAME \
        --users 50

A throwaway SQLite file seeded like bench/backend_load.py, or (``--database-url``) a database seeded by
``backend_load.py --keep-postgres-db NAME`` (e.g. 1,000 users x 1,000 workouts). For each endpoint and
resolution, per request: ``time.process_time`` of this process (the web worker's share: on PostgreSQL the
server's own CPU is not in it, see backend_load.py) and wall time, for

- sql: executing the endpoint's query and fetching its rows (the same statement the endpoint runs);
- build: the endpoint's function (backend.trends) given the rows already fetched (weekly, which runs a
  second statement for the fitness markers: the function minus the sql part);
- json: encoding the answer as the endpoint does;
- request: the whole request through Flask's test client (authentication, routing, the above, the
  response); request - (sql + build + json) is the framework's share.

Users are taken in turn (user 1, 2, ...), each request another user's history.
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend_load import reuse, seed
from common import machine, table
from sqlalchemy import DateTime, type_coerce

from backend import create_app, trends
from backend.db import EXTENSION_KEY
from backend.models import Workout
from backend.schemas import WorkoutFilter

ENDPOINTS: dict[str, tuple[str, dict[str, Any]]] = {
    # label: (URL, keyword arguments of the backend.trends function, where it has them)
    "stages (default)": ("/api/v1/trends/stages", {}),
    "stages, resolution=workout": ("/api/v1/trends/stages?resolution=workout", {"resolution": "workout"}),
    "rr-vs-pulse (default)": ("/api/v1/trends/rr-vs-pulse", {}),
    "rr-vs-pulse, resolution=workout": (
        "/api/v1/trends/rr-vs-pulse?resolution=workout",
        {"resolution": "workout"},
    ),
    "rr-vs-pulse, resolution=workout&format=columns": (
        "/api/v1/trends/rr-vs-pulse?resolution=workout&format=columns",
        {"resolution": "workout", "format": "columns"},
    ),
    "weekly": ("/api/v1/trends/weekly", {}),
}


def query_of(label: str, user_id: int) -> Any:
    """The statement the endpoint runs (the summaries' pivot, or the weekly aggregation)."""
    everything = WorkoutFilter()
    if label.startswith("weekly"):
        return trends.weekly_query(user_id, everything)
    columns: list[Any] = []
    if label.startswith("rr-vs-pulse"):
        columns += [type_coerce(Workout.started_at, DateTime(timezone=True)), Workout.utc_offset_min]
    if "resolution" in inspect.signature(trends.stage_trends).parameters:
        columns.append(Workout.local_date)  # the code of issue 14's read path groups by the local date
    return trends.stage_values_query(user_id, everything, *columns)


def function_of(label: str, kwargs: dict[str, Any]) -> Callable[..., dict[str, Any]] | None:
    """The backend.trends function behind the endpoint, or None when this checkout lacks its options."""
    fn = (
        trends.weekly
        if label.startswith("weekly")
        else trends.rr_vs_pulse
        if "pulse" in label
        else trends.stage_trends
    )
    params = inspect.signature(fn).parameters
    if any(name not in params for name in kwargs):
        return None
    if "resolution" in params and "resolution" not in kwargs:
        kwargs = {**kwargs, "resolution": "auto"}  # the endpoints' default
    return lambda session, user_id: fn(session, user_id, WorkoutFilter(), **kwargs)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, out


class Replay:
    """A stand-in session whose one statement answers rows fetched before: the function's building alone."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def execute(self, statement: Any) -> Replay:
        return self

    def all(self) -> list[Any]:
        return self.rows

    tuples = all  # the interface of the code before issue 14's read path


def one_request(
    app: Any, client: Any, label: str, path: str, fn: Callable[..., Any], user_id: int, token: str
) -> tuple[dict[str, tuple[float, float]], int]:
    """(CPU s, wall s) of each part of one request for `user_id`, and the answer's size."""
    db = app.extensions[EXTENSION_KEY]
    with db.session() as session:
        sql = timed(lambda: session.execute(query_of(label, user_id)).all())
    if label.startswith("weekly"):  # two statements (weeks, fitness markers): the function minus the first
        with db.session() as session:
            whole = timed(lambda: fn(session, user_id))
        build = (whole[0] - sql[0], whole[1] - sql[1])
    else:  # the function on the rows already fetched: its own building, timed directly
        whole = timed(lambda: fn(Replay(sql[2]), user_id))
        build = whole[:2]
    encoded = timed(lambda: app.json.dumps(whole[2], separators=(",", ":")).encode())
    response = timed(lambda: client.get(path, headers={"Authorization": f"Bearer {token}"}))
    assert response[2].status_code == 200, response[2].get_data(as_text=True)
    parts = {
        "sql": sql[:2],
        "build": build,
        "json": encoded[:2],
        "request": response[:2],
    }
    return parts, len(response[2].data)


def run(url: str, tokens: list[str], requests: int) -> list[list[str]]:
    app = create_app({"DATABASE_URL": url, "LOG_LEVEL": "WARNING", "TESTING": True})
    db = app.extensions[EXTENSION_KEY]
    client = app.test_client()
    rows = []
    with app.app_context():
        for label, (path, kwargs) in ENDPOINTS.items():
            fn = function_of(label, kwargs)
            if fn is None:
                rows.append([label, "-", "-", "-", "-", "not in this checkout"])
                continue
            sums = dict.fromkeys(("sql", "build", "json", "request"), (0.0, 0.0))
            size = 0
            for n in range(requests + 3):  # 3 warm-up rounds
                user_id = 1 + n % len(tokens)
                parts, answer_bytes = one_request(app, client, label, path, fn, user_id, tokens[user_id - 1])
                if n >= 3:
                    sums = {k: (sums[k][0] + parts[k][0], sums[k][1] + parts[k][1]) for k in sums}
                    size += answer_bytes
            cells = [f"{c / requests * 1000:.1f} / {w / requests * 1000:.1f}" for c, w in sums.values()]
            rows.append([label, *cells, f"{size / requests / 1000:.0f} kB"])
    db.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--workouts-per-user", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=30, help="requests per endpoint (30)")
    parser.add_argument("--database-url", help="a seeded database (backend_load.py --keep-postgres-db)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="respira-trends-breakdown-") as tmp:
        if args.database_url:
            url = args.database_url
            tokens = reuse(url, args.users)
        else:
            url = f"sqlite:///{Path(tmp) / 'breakdown.sqlite3'}"
            tokens, _ = seed(url, args.users, args.workouts_per_user)
        print(f"database: {url.split('://')[0]}, {args.users} users, {args.requests} requests per endpoint\n")
        headers = ["endpoint", "sql ms", "build ms", "json ms", "whole request ms", "answer"]
        print("each cell: CPU ms / wall ms per request, this process")
        print(table(headers, run(url, tokens, args.requests)))


if __name__ == "__main__":
    main()
