"""Benchmark the Apple Health import: a synthetic export.xml of >= 50 MB, imported as the API and CLI do.

    .venv/bin/python bench/apple_health_import.py                      # 60 MB, a temporary SQLite file
    .venv/bin/python bench/apple_health_import.py --size-mb 200 --zip  # bigger, and as export.zip
    .venv/bin/python bench/apple_health_import.py --database-url postgresql://postgres@127.0.0.1:5432/bench

The file comes from tests.support.apple_health_export (heart rate every few minutes and every 5 s in workouts,
respiratory rate at night, energy, steps, HRV, blood pressure, workouts with routes...). Each measured
import runs in a fresh child process, so its peak resident memory (ru_maxrss) is the import's own; the
child also reports the peak of Python allocations when --tracemalloc is given (slower). Printed:
records/s (every record counted: imported kinds and skipped ones), stored rows/s, MB/s, peak memory,
and the same for a re-import of the file (which must add nothing). A PostgreSQL database given with
--database-url must be empty or already migrated; a user named bench-<random> is created in it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def import_once(path: Path, database_url: str, user: str, trace: bool) -> dict[str, Any]:
    """Runs in the child: create the app, import `path` for `user`, report timings and memory."""
    import tracemalloc

    from backend import create_app, migrate
    from backend.db import EXTENSION_KEY
    from backend.imports.jobs import ImportSettings, create_job, run_apple_health_job
    from backend.models import User

    app = create_app({"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"})
    db = app.extensions[EXTENSION_KEY]
    migrate.upgrade(db)
    with db.session(write=True) as session, session.begin():
        user_row = session.query(User).filter_by(name=user).one_or_none()
        if user_row is None:
            user_row = User(name=user)
            session.add(user_row)
            session.flush()
        user_id = user_row.id
    job = create_job(db, user_id, "apple_health", path.name)
    settings = ImportSettings.from_app(app)
    rss_before = rss_mb()
    if trace:
        tracemalloc.start()
    started, cpu_started = time.perf_counter(), time.process_time()
    done = run_apple_health_job(db, job.id, path, settings)
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    traced_peak = tracemalloc.get_traced_memory()[1] / 1e6 if trace else None
    if done is None or done.status != "succeeded":
        raise SystemExit(f"import failed: {done and done.error}")
    return {
        "seconds": seconds,
        "cpu_s": cpu_s,  # steadier than wall time on a busy machine
        "counts": done.counts,
        "rss_before_mb": rss_before,
        "rss_peak_mb": rss_mb(),
        "traced_peak_mb": traced_peak,
        "batch_size": settings.batch_size,
    }


def run_child(path: Path, database_url: str, user: str, trace: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", str(path), database_url, user] + (
        ["--tracemalloc"] if trace else []
    )
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(label: str, result: dict[str, Any], size_bytes: int) -> None:
    counts: dict[str, int] = result["counts"]
    seconds: float = result["seconds"]
    added = sum(n for key, n in counts.items() if key.endswith("_added"))
    print(f"{label}: {seconds:.1f} s ({result['cpu_s']:.1f} s CPU in this process)")
    records = counts["records_read"]
    print(f"  records parsed  {records:>10,}  {records / seconds:>10,.0f} records/s")
    print(f"  XML             {size_bytes / 1e6:>10,.1f} MB {size_bytes / 1e6 / seconds:>10,.1f} MB/s")
    batch = result["batch_size"]
    print(f"  rows added      {added:>10,}  {added / seconds:>10,.0f} rows/s (batches of {batch})")
    print(
        f"  peak RSS        {result['rss_peak_mb']:>10,.1f} MB (the process before importing: "
        f"{result['rss_before_mb']:.1f} MB; growth {result['rss_peak_mb'] - result['rss_before_mb']:.1f} MB)"
    )
    if result["traced_peak_mb"] is not None:
        print(f"  peak Python heap {result['traced_peak_mb']:>9,.1f} MB (tracemalloc, during the import)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=60.0, help="size of export.xml (default 60)")
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--zip", action="store_true", help="also import it as export.zip")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also report the Python heap peak (slower)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="write the export here and keep it")
    args = parser.parse_args()

    from tests.support.apple_health_export import write_export_file

    with tempfile.TemporaryDirectory(prefix="respira-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        xml = folder / "export.xml"
        started = time.perf_counter()
        summary = write_export_file(xml, target_bytes=int(args.size_mb * 1e6), seed=1)
        print(f"generated {xml} in {time.perf_counter() - started:.1f} s: {json.dumps(asdict(summary))}")
        database_url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
        user = f"bench-{uuid.uuid4().hex[:8]}"

        first = run_child(xml, database_url, user, args.tracemalloc)
        report("import", first, xml.stat().st_size)
        counts: dict[str, int] = first["counts"]
        expected = (
            summary.heart_rate,
            summary.respiratory_rate,
            summary.hrv_sdnn,
            summary.resting_heart_rate + summary.walking_heart_rate_average + summary.vo2_max,
            summary.workouts,
            summary.skipped,
            summary.records,
        )
        got = (
            counts["heart_rate_added"],
            counts["respiratory_rate_added"],
            counts["hrv_sdnn_added"],
            counts["resting_heart_rate_added"]
            + counts["walking_heart_rate_average_added"]
            + counts["vo2_max_added"],
            counts["health_workouts_added"],
            counts["skipped"],
            counts["records_read"],
        )
        print(f"  stored as generated: {got == expected} {got}")
        again = run_child(xml, database_url, user, args.tracemalloc)
        report("re-import of the same file", again, xml.stat().st_size)
        new = sum(n for key, n in again["counts"].items() if key.endswith("_added"))
        print(f"  rows added by the re-import: {new}")
        if args.zip:
            archive = folder / "export.zip"
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
                out.write(xml, "apple_health_export/export.xml")
            print(f"zipped to {archive.stat().st_size / 1e6:.1f} MB")
            zipped = run_child(archive, database_url, f"{user}-zip", args.tracemalloc)
            report("import of export.zip (streamed from the archive)", zipped, xml.stat().st_size)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        result = import_once(Path(sys.argv[2]), sys.argv[3], sys.argv[4], "--tracemalloc" in sys.argv)
        print(json.dumps(result))
    else:
        main()
