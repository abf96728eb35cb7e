"""Imports into Respira: Apple Health exports, Health Auto Export pushes, and Respira's own JSON export.

    dates               the date formats health apps write ("2024-01-15 23:00:00 -0600", 12-hour variants)
    records             what an import yields (samples, workouts) and how it is stored without duplicates
    apple_health        streaming parser of export.zip / export.xml (expat, bounded memory)
    health_auto_export  the JSON that the Health Auto Export app pushes
    push_stream         large Health Auto Export pushes, read as a stream (ijson) in a job
    report              the import report: records skipped by type and reason, stored per kind
    json_restore        re-importing a JSON export (portability)
    matching            attaching heart-rate samples to workouts; filling missing protocol pulse points
    jobs                import jobs: batches, progress, background threads, the job resource

Settings (app config, or RESPIRA_<NAME> in the environment) and their defaults are in `SETTINGS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SETTINGS: dict[str, Any] = {
    # Uploads of export.zip / export.xml may be this large (bytes); the JSON body limit stays small.
    "IMPORT_MAX_CONTENT_LENGTH": 4 * 1024**3,
    # Health Auto Export pushes; those above IMPORT_PUSH_INLINE_MAX_BYTES are streamed from disk.
    "IMPORT_JSON_MAX_CONTENT_LENGTH": 64 * 1024**2,
    # JSON restores are parsed whole in memory (about 20 times the body): keep them small; larger
    # documents are restored with `flask --app backend import json USER FILE`, outside the web workers.
    "IMPORT_RESTORE_MAX_CONTENT_LENGTH": 16 * 1024**2,
    # Imports up to this size (an export's XML once inflated; a push's JSON) run during the request;
    # larger ones in a background job, so no request is long enough for gunicorn to kill its worker.
    "IMPORT_INLINE_MAX_BYTES": 8 * 1024**2,
    # Hostile uploads (docs/security.md): the most an export.xml may inflate to, how many times its
    # compressed size, and the longest single tag or comment (apple_health.ExportLimits).
    "IMPORT_MAX_XML_BYTES": 16 * 1024**3,
    "IMPORT_MAX_ZIP_RATIO": 100,
    "IMPORT_MAX_XML_NODE_BYTES": 1024**2,
    # Health Auto Export pushes up to this size are parsed whole in the request (about 20 times the
    # body in memory); larger ones are spooled to disk and parsed as a stream in a job.
    "IMPORT_PUSH_INLINE_MAX_BYTES": 2 * 1024**2,
    "IMPORT_BATCH_SIZE": 5000,  # records per transaction
    "IMPORT_UPLOAD_DIR": None,  # where uploads wait for their job; default: <instance>/imports
    # A protocol pulse point is filled from the nearest heart-rate sample at most this far away.
    "IMPORT_PULSE_TOLERANCE_S": 120,
    # A job that stored nothing for this long is reported failed (its process probably went away).
    "IMPORT_STALE_AFTER_S": 900,
}


def setting(config: Mapping[str, Any], name: str) -> Any:
    """The app's value for an import setting, or its default."""
    value = config.get(name)
    return SETTINGS[name] if value is None else value
