"""Errors as RFC 9457 problem details (`application/problem+json`) that name the offending field.

Views raise `ProblemError`; the handlers registered here turn it, Werkzeug's HTTP errors (404, 405, 413,
...) and unexpected exceptions into problem documents for API paths. Field errors follow the RFC's own
example: an `errors` array whose members carry a `detail` and, for body fields, a JSON `pointer`; we add
`field` (a readable path such as `stages[0].segments[2].rr_bpm`) and `in` (body, query, path or header).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, json, request
from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

from backend.db import ConflictError

PROBLEM_MIMETYPE = "application/problem+json"
DOCS_PATH = "/api/v1/docs"

# Problem types with their own meaning; everything else is "about:blank" (the HTTP status says it all).
VALIDATION = "validation-error"
MALFORMED_JSON = "malformed-json"
CONFLICT = "conflict"
IDEMPOTENCY_KEY_REUSED = "idempotency-key-reused"
MALFORMED_XML = "malformed-xml"
NOT_AN_EXPORT = "not-an-export"
UPLOAD_TOO_LARGE = "upload-too-large"
PROBLEM_TYPES: dict[str, str] = {
    VALIDATION: "A field is missing, has the wrong type, is unknown or out of range; see `errors`.",
    MALFORMED_JSON: "The body is not valid JSON; `detail` gives the line and column.",
    CONFLICT: "The request collides with stored data (a pulse point or segment start already stored).",
    IDEMPOTENCY_KEY_REUSED: "The Idempotency-Key was already used for a different request.",
    MALFORMED_XML: "The uploaded export.xml is not well-formed XML; `detail` gives the line and column.",
    NOT_AN_EXPORT: "The upload is not an Apple Health export (export.zip or export.xml).",
    UPLOAD_TOO_LARGE: "The upload would inflate past the import limits (a zip bomb, a gigantic element).",
}

log = logging.getLogger("respira.errors")


@dataclass(frozen=True)
class FieldError:
    loc: tuple[str | int, ...]
    detail: str
    location: str = "body"  # body | query | path | header

    @property
    def field(self) -> str:
        """`stages[0].segments[2].rr_bpm`: how a person would name the field."""
        text = ""
        for part in self.loc:
            if isinstance(part, int):
                text += f"[{part}]"
            else:
                text += f".{part}" if text else str(part)
        return text or "(body)"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "in": self.location, "detail": self.detail}
        if self.location == "body":
            parts = (str(p).replace("~", "~0").replace("/", "~1") for p in self.loc)
            out["pointer"] = "#/" + "/".join(parts) if self.loc else "#"
        return out


@dataclass(eq=False)
class ProblemError(Exception):
    status: int
    title: str
    detail: str | None = None
    type: str | None = None  # a key of PROBLEM_TYPES, or None for about:blank
    errors: Sequence[FieldError] = ()
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.detail or self.title)

    @classmethod
    def invalid(cls, errors: Sequence[FieldError], title: str = "Invalid request") -> ProblemError:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return cls(422, title, f"{first.field}: {first.detail}{more}", VALIDATION, list(errors))

    @classmethod
    def conflict(cls, error: FieldError) -> ProblemError:
        return cls(409, "Conflict", f"{error.field}: {error.detail}", CONFLICT, [error])


def field_errors(exc: ValidationError, location: str) -> list[FieldError]:
    """Pydantic's errors, with locations kept as paths (its own messages are already plain English)."""
    return [FieldError(tuple(err["loc"]), err["msg"], location) for err in exc.errors(include_url=False)]


def problem_response(problem: ProblemError) -> Response:
    body: dict[str, Any] = {
        "type": f"{DOCS_PATH}#problem-{problem.type}" if problem.type else "about:blank",
        "title": problem.title,
        "status": problem.status,
    }
    if problem.detail:
        body["detail"] = problem.detail
    body["instance"] = request.path
    if problem.errors:
        body["errors"] = [e.to_json() for e in problem.errors]
    response = Response(json.dumps(body), status=problem.status, mimetype=PROBLEM_MIMETYPE)
    response.headers.update(problem.headers)
    return response


def _wants_problem() -> bool:
    """API and probe paths answer problem+json; web pages (added later) keep HTML error pages."""
    return request.path.startswith("/api/") or request.path in ("/healthz", "/readyz")


def _from_http_exception(exc: HTTPException) -> ProblemError:
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    detail = exc.description
    if exc.code == 413:
        limit = request.max_content_length
        detail = f"The request body is larger than the {limit} bytes this endpoint accepts."
    return ProblemError(exc.code or 500, exc.name, detail, None, (), headers)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ProblemError)
    def _problem(exc: ProblemError) -> Response:
        return problem_response(exc)

    @app.errorhandler(ConflictError)
    def _conflict(exc: ConflictError) -> Response:
        return problem_response(
            ProblemError(409, "Conflict", "The request collides with stored data.", CONFLICT)
        )

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def _database_unavailable(exc: Exception) -> Response | HTTPException:
        # The database is down, restarting or unreachable: a passing condition, so 503 and a hint to retry
        # (a 500 would say the request itself broke the server). See tests/backend/test_faults.py.
        log.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
        if not _wants_problem():
            return ServiceUnavailable()
        detail = "The database is unavailable; retry in a few seconds."
        problem = ProblemError(503, "Service Unavailable", detail, headers={"Retry-After": "5"})
        return problem_response(problem)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response | HTTPException:
        if not _wants_problem():
            return exc
        return problem_response(_from_http_exception(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response | HTTPException:
        log.exception("unhandled error on %s %s", request.method, request.path)
        if not _wants_problem():
            return InternalServerError()
        return problem_response(
            ProblemError(500, "Internal Server Error", "The server failed; it was logged.")
        )
