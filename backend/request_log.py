"""Structured logs: one JSON object per line, and one `request` line per HTTP request.

Every request gets an id (the client's X-Request-ID when it is sane, else a new one), echoed in the
response, so a client report can be matched to the server's line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from flask import Flask, Response, g, request

REQUEST_LOGGER = "respira.request"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON; structured values go in `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(app: Flask) -> None:
    """Give the `respira` loggers a handler unless the host (gunicorn, pytest) already set one up."""
    logger = logging.getLogger("respira")
    logger.setLevel(app.config["LOG_LEVEL"])
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            JsonFormatter() if app.config["LOG_JSON"] else logging.Formatter(logging.BASIC_FORMAT)
        )
        logger.addHandler(handler)


def init_request_logging(app: Flask) -> None:
    log = logging.getLogger(REQUEST_LOGGER)

    @app.before_request
    def _start() -> None:
        g.request_started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex

    @app.after_request
    def _log(response: Response) -> Response:
        started = g.get("request_started")
        principal = g.get("principal")
        response.headers["X-Request-ID"] = g.get("request_id", "")
        log.info(
            "request",
            extra={
                "fields": {
                    "request_id": g.get("request_id"),
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
                    "bytes_in": request.content_length,
                    "bytes_out": response.calculate_content_length(),
                    "remote_addr": request.remote_addr,
                    "user_id": principal.user_id if principal else None,
                    "token_id": principal.token_id if principal else None,
                }
            },
        )
        return response
