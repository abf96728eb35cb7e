"""A queue worker that dies mid-import, for tests/backend/test_tasks.py (test scaffolding only).

    python tests/backend/queue_crash_worker.py     (DATABASE_URL and RESPIRA_QUEUE_* in the environment)

It runs the configured queue's first task in this very process (RQ's SimpleWorker) and kills itself
with SIGKILL right after the import's first batch is committed: exactly what a crashed or OOM-killed
worker leaves behind (a job row `running`, an RQ task `started`, a worker that never said goodbye).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rq import SimpleWorker  # noqa: E402

from backend import create_app, tasks  # noqa: E402
from backend.imports import jobs  # noqa: E402

store = jobs._Run.store


def store_then_die(self: jobs._Run, *args: object, **kwargs: object) -> None:
    store(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    app = create_app()
    queue = tasks.queue_of(app)
    assert queue is not None, "RESPIRA_QUEUE_URL is not set"
    jobs._Run.store = store_then_die  # type: ignore[method-assign]
    tasks.use_app_in_worker(app)
    with app.app_context():
        SimpleWorker([queue], connection=queue.connection).work(burst=True, max_jobs=1)
    sys.exit("the worker finished the task instead of dying in it")


if __name__ == "__main__":
    main()
