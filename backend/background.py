"""Jobs run in a daemon thread of the web process when no task queue is configured.

Imports and exports both use this: each job's thread is kept in the app's ``extensions`` under the
job's UUID, so that tests and a shutting-down process can wait for it, and finished threads are
forgotten when the next one starts.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app

THREADS_KEY = "respira.background_threads"


def app_object() -> Flask:
    """The app behind ``current_app`` (a context-local proxy), for a job that outlives the request."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]  # flask types the proxy as Flask
    return app


def start_thread(
    app: Flask,
    job_uuid: uuid.UUID,
    target: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None = None,
    name: str = "respira-job",
) -> None:
    """Run ``target(*args, **kwargs)`` in a daemon thread registered under ``job_uuid``."""
    thread = threading.Thread(target=target, args=args, kwargs=kwargs or {}, name=name, daemon=True)
    threads: dict[uuid.UUID, threading.Thread] = app.extensions.setdefault(THREADS_KEY, {})
    for finished in [key for key, t in threads.items() if not t.is_alive()]:
        del threads[finished]
    threads[job_uuid] = thread
    thread.start()


def wait_for(app: Flask, job_uuid: uuid.UUID, timeout_s: float | None = None) -> bool:
    """Wait for this process's thread of the job to end (tests, shutdown); True when it has (or when
    this process runs no thread for it)."""
    thread = app.extensions.get(THREADS_KEY, {}).get(job_uuid)
    if thread is not None:
        thread.join(timeout_s)
        return not thread.is_alive()
    return True
