"""Peak worker memory under hostile imports, measured on a real gunicorn worker (issue 15).

    .venv/bin/python bench/hostile_imports.py                   # 1 GB zip bombs and a 60 MB push
    .venv/bin/python bench/hostile_imports.py --push-mb 20 --bomb-gb 0.25   # quicker
    .venv/bin/python bench/hostile_imports.py --compare-inline  # also the 60 MB push parsed whole

Each case starts gunicorn (the project's gunicorn.conf.py, one sync worker, a fresh SQLite database) so
the worker's peak resident memory (VmHWM in /proc) is that case's own, and sends the upload over HTTP:

- bomb: export.zip whose export.xml inflates to --bomb-gb GB (one endless comment, about 1000:1).
  Expected: 413 problem+json at once, from the zip header; nothing inflated.
- bomb, ratio check off (IMPORT_MAX_ZIP_RATIO raised past the bomb's ratio, as if the header check
  were fooled): the streaming parser inflates and stops after IMPORT_MAX_XML_NODE_BYTES of one comment.
- push: a Health Auto Export push of --push-mb MB of heart-rate points (49 bytes each), above
  IMPORT_PUSH_INLINE_MAX_BYTES: spooled to disk, answered 202, checked and stored as a stream in a job;
  the bench polls the job until it ends.
- push inline (--compare-inline): the same push with IMPORT_PUSH_INLINE_MAX_BYTES raised past it, i.e.
  parsed whole as before issue 15: the figure the streaming path is compared with.

Printed per case: status, seconds, worker peak RSS, and its growth over the idle worker. The bound the
streaming paths are held to: growth under BOUND_MB.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BOUND_MB = 150  # growth of the worker's peak RSS allowed for any streamed hostile import
HEADER = b'<?xml version="1.0" encoding="UTF-8"?>\n<HealthData locale="en_US">\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def worker_pid(master: int) -> int:
    for _ in range(200):
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise RuntimeError("gunicorn started no worker")


def call(port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 600) -> tuple[int, Any]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw[:200]
    finally:
        conn.close()


@contextmanager
def server(tmp: Path, **env: str) -> Iterator[tuple[int, int, str]]:
    """gunicorn with one worker on a fresh SQLite file; yields (port, worker pid, a user's token)."""
    from backend import create_app, migrate
    from backend.db import EXTENSION_KEY
    from backend.models import User
    from backend.tokens import issue_token

    url = f"sqlite:///{tmp / f'bench-{secrets.token_hex(4)}.sqlite3'}"
    app = create_app({"DATABASE_URL": url, "LOG_LEVEL": "WARNING"})
    db = app.extensions[EXTENSION_KEY]
    migrate.upgrade(db)
    with db.session(write=True) as session, session.begin():
        user = User(name="bench")
        session.add(user)
        _, token = issue_token(session, user, "bench")
    db.dispose()
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        "RESPIRA_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "RESPIRA_SECRET_KEY": secrets.token_hex(32),
        "RESPIRA_LOG_LEVEL": "WARNING",
        "RESPIRA_IMPORT_UPLOAD_DIR": str(tmp / "uploads"),
        **env,
    }
    cmd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "backend:create_app()"]
    log = open(tmp / "gunicorn.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            try:
                if call(port, "GET", "/readyz", timeout=5)[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {token}"}
        call(port, "GET", "/api/v1/imports", headers=auth)  # warm: the app loaded, a request served
        yield port, worker_pid(proc.pid), token
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def bomb_zip(path: Path, gigabytes: float) -> None:
    """export.zip whose export.xml is HEADER, then one comment of `gigabytes` GB of 'x'."""
    chunk = b"x" * (1024 * 1024)
    archive = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9)
    with archive, archive.open("apple_health_export/export.xml", "w", force_zip64=True) as member:
        member.write(HEADER + b"<!--")
        for _ in range(int(gigabytes * 1024)):
            member.write(chunk)
        member.write(b"-->\n</HealthData>\n")


def push_file(path: Path, megabytes: float) -> int:
    """A Health Auto Export push of about `megabytes` MB: one heart-rate point a minute from 2020."""
    points = int(megabytes * 1e6 / 49)  # {"date": "2020-01-01 00:00:00 +0000", "Avg": 60}, and a comma
    with open(path, "wb") as out:
        out.write(b'{"data": {"metrics": [{"name": "heart_rate", "units": "bpm", "data": [')
        start = datetime(2020, 1, 1, tzinfo=timezone.utc)
        for i in range(points):
            date = (start + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S +0000")
            out.write(f'{"," if i else ""}{{"date": "{date}", "Avg": {60 + i % 40}}}'.encode())
        out.write(b']}], "workouts": []}}')
    return points


def multipart(path: Path) -> tuple[Iterator[bytes], dict[str, str]]:
    boundary = secrets.token_hex(16)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="export.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = len(head) + path.stat().st_size + len(tail)

    def body() -> Iterator[bytes]:
        yield head
        with open(path, "rb") as file:
            while chunk := file.read(1024 * 1024):
                yield chunk
        yield tail

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(size)}
    return body(), headers


def wait_job(port: int, token: str, url: str) -> dict[str, Any]:
    while True:
        status, job = call(port, "GET", url, headers={"Authorization": f"Bearer {token}"})
        if status != 200 or job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.5)


class PeakWatcher(threading.Thread):
    """Samples the worker's VmHWM while a case runs: a worker gunicorn kills takes its figure along."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, peak_rss_mb(pid), threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            try:
                self.peak = max(self.peak, peak_rss_mb(self.pid))
            except (OSError, RuntimeError):
                return  # the worker is gone


def run_case(name: str, tmp: Path, send: Any, env: dict[str, str]) -> dict[str, Any]:
    with server(tmp, **env) as (port, pid, token):
        idle = peak_rss_mb(pid)
        watcher = PeakWatcher(pid)
        watcher.start()
        started = time.perf_counter()
        try:
            status, answer = send(port, token)
        except (OSError, http.client.HTTPException) as exc:  # e.g. the worker was killed mid-request
            status, answer = 0, {"detail": f"no answer: {exc!r}"}
        job = None
        if status == 202:
            job = wait_job(port, token, answer["url"])
        seconds = time.perf_counter() - started
        watcher.done.set()
        watcher.join()
        peak = watcher.peak
    result = {
        "case": name,
        "status": status,
        "job": job and {"status": job["status"], "counts": job["counts"], "error": job["error"]},
        "detail": answer.get("detail") if isinstance(answer, dict) else None,
        "seconds": round(seconds, 1),
        "worker_idle_peak_mb": round(idle, 1),
        "worker_peak_mb": round(peak, 1),
        "growth_mb": round(peak - idle, 1),
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bomb-gb", type=float, default=1.0)
    parser.add_argument("--push-mb", type=float, default=60.0)
    parser.add_argument("--compare-inline", action="store_true")
    parser.add_argument("--skip-bombs", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="respira-hostile-") as folder:
        tmp = Path(folder)
        bomb = tmp / "bomb.zip"
        results = []
        if not args.skip_bombs:
            bomb_zip(bomb, args.bomb_gb)
            print(
                f"bomb: {bomb.stat().st_size / 1e6:.1f} MB zip inflating to {args.bomb_gb:g} GB", flush=True
            )

        def send_bomb(port: int, token: str) -> tuple[int, Any]:
            body, headers = multipart(bomb)
            headers["Authorization"] = f"Bearer {token}"
            return call(port, "POST", "/api/v1/imports/apple-health", body, headers)

        if not args.skip_bombs:
            results.append(run_case("zip bomb", tmp, send_bomb, {}))
            ratio_off = {"RESPIRA_IMPORT_MAX_ZIP_RATIO": "100000", "RESPIRA_IMPORT_INLINE_MAX_BYTES": "0"}
            results.append(run_case("zip bomb, ratio check off", tmp, send_bomb, ratio_off))

        push = tmp / "push.json"
        points = push_file(push, args.push_mb)
        print(f"push: {push.stat().st_size / 1e6:.1f} MB, {points:,} heart-rate points", flush=True)

        def send_push(port: int, token: str) -> tuple[int, Any]:
            headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Content-Length": str(push.stat().st_size),
            }
            with open(push, "rb") as body:
                return call(port, "POST", "/api/v1/imports/health-auto-export", body, headers)

        results.append(run_case("push, streamed in a job", tmp, send_push, {}))
        if args.compare_inline:
            whole = {"RESPIRA_IMPORT_PUSH_INLINE_MAX_BYTES": str(10**9)}
            results.append(run_case("push, parsed whole (as before)", tmp, send_push, whole))
        streamed = [r for r in results if "whole" not in r["case"]]
        worst = max(r["growth_mb"] for r in streamed)
        verdict = "within" if worst <= BOUND_MB else "OVER"
        print(f"worst growth of the worker's peak RSS on the streamed paths: {worst:.1f} MB, {verdict} the "
              f"{BOUND_MB} MB bound")  # fmt: skip


if __name__ == "__main__":
    main()
