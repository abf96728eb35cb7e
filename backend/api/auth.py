"""Bearer-token authentication for the API, with rate limiting of repeated failures.

Default-deny: `require_token` runs before every endpoint of the API blueprint (and of the blueprints
nested in it), so a new endpoint cannot forget it; only operations declared `public=True` skip it.
"""

from __future__ import annotations

from typing import cast

from flask import current_app, g, request

from backend.db import get_db
from backend.problems import FieldError, ProblemError
from backend.ratelimit import AuthFailureLimiter
from backend.tokens import Principal, authenticate

LIMITER_KEY = "respira.auth_failures"


def current_principal() -> Principal:
    """The authenticated caller (user and device token) of this request."""
    return cast(Principal, g.principal)


def auth_failure_limiter() -> AuthFailureLimiter:
    return cast(AuthFailureLimiter, current_app.extensions[LIMITER_KEY])


def _unauthorized(detail: str, error: str | None = None) -> ProblemError:
    challenge = 'Bearer realm="respira"' + (f', error="{error}"' if error else "")
    return ProblemError(
        401,
        "Unauthorized",
        detail,
        None,
        [FieldError(("Authorization",), detail, "header")],
        {"WWW-Authenticate": challenge},
    )


def require_token() -> None:
    view = current_app.view_functions.get(request.endpoint or "")
    operation = getattr(view, "openapi", None)
    if view is None or (operation is not None and operation.public):
        return  # unknown URL (a 404 follows) or a public document
    limiter = auth_failure_limiter()
    client = request.remote_addr or "unknown"
    if limiter.blocked(client):
        raise ProblemError(
            429,
            "Too Many Requests",
            "Too many failed authentications from this address; try again later.",
            headers={"Retry-After": str(limiter.retry_after_s(client))},
        )
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("Send the device token as 'Authorization: Bearer <token>'.")
    principal = authenticate(
        get_db(), token.strip(), touch_interval_s=current_app.config["TOKEN_TOUCH_INTERVAL_S"]
    )
    if principal is None:
        limiter.record_failure(client)
        raise _unauthorized("The token is invalid or revoked.", "invalid_token")
    g.principal = principal
