"""gunicorn settings for the Respira backend; gunicorn reads this file from the working directory.

    gunicorn 'backend:create_app()'         # or just `gunicorn`, which uses wsgi_app below

Environment: PORT or RESPIRA_BIND (where to listen), WEB_CONCURRENCY (workers; default 2 x CPUs + 1,
gunicorn's rule of thumb for I/O-bound sync workers), RESPIRA_THREADS (threads per worker, default 1),
RESPIRA_TRUSTED_PROXY_COUNT (the one proxy setting: how many reverse proxies in front are believed; the
app applies it, see docs/deployment.md). Request logs are written by the
app itself, one JSON object per line (backend/request_log.py), so gunicorn's access log stays off and its
own messages are formatted as JSON too.
"""

import multiprocessing
import os

from backend import gunicorn_errors

wsgi_app = "backend:create_app()"
bind = os.environ.get("RESPIRA_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("RESPIRA_THREADS", "1"))
timeout = 60  # a request that takes longer than this is stuck: the worker is replaced
graceful_timeout = 30
keepalive = 5
max_requests = 2000  # recycle workers now and then; the jitter stops them all restarting at once
max_requests_jitter = 200
# gunicorn itself believes no proxy headers: the app does, per RESPIRA_TRUSTED_PROXY_COUNT (ProxyFix), so
# trust is configured in one place. An empty list means "trust nobody" to gunicorn.
forwarded_allow_ips = ""


def on_starting(server: object) -> None:
    gunicorn_errors.install()  # gunicorn's own error answers as problem+json, like the app's


def post_worker_init(worker: object) -> None:
    """Move everything loaded at start-up (the app, SQLAlchemy's mappers, pydantic's schemas) out of the
    garbage collector's sight: a full collection then walks only what requests allocate. Measured
    in-process (docs/benchmarks.md): an account export's CPU 0.32 s -> 0.18 s; small requests unchanged."""
    import gc

    gc.freeze()


accesslog = None
errorlog = "-"
loglevel = os.environ.get("RESPIRA_LOG_LEVEL", "info").lower()
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "backend.request_log.JsonFormatter"}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": loglevel.upper(), "propagate": False},
        "respira": {"handlers": ["stderr"], "level": loglevel.upper(), "propagate": False},
    },
}
