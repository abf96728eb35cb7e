"""The OpenAPI document and an HTML reference made from it, in the dashboard's frame (no CDN, offline)."""

from __future__ import annotations

import json
from typing import Any, cast

from flask import Blueprint, current_app, render_template

from backend.api.openapi import build_openapi, operation
from backend.problems import PROBLEM_TYPES

bp = Blueprint("docs", __name__)
CACHE_KEY = "respira.openapi"
TITLE = "Respira API"
VERSION = "1.0.0"


def openapi_document() -> dict[str, Any]:
    """Built once per app: the URL map does not change after start-up."""
    if CACHE_KEY not in current_app.extensions:
        current_app.extensions[CACHE_KEY] = build_openapi(
            current_app, title=TITLE, version=VERSION, prefix="/api/v1"
        )
    return cast(dict[str, Any], current_app.extensions[CACHE_KEY])


@bp.get("/openapi.json")
@operation(
    "This OpenAPI 3.1 document", tags=("docs",), public=True, responses={200: ("OpenAPI document", None)}
)
def openapi_json() -> dict[str, Any]:
    return openapi_document()


@bp.get("/docs")
@operation("Human-readable API reference", tags=("docs",), public=True, responses={200: ("HTML page", None)})
def docs_page() -> str:
    spec = openapi_document()
    operations = [
        {"method": method.upper(), "path": path, **op}
        for path, methods in spec["paths"].items()
        for method, op in methods.items()
    ]
    schemas = {name: json.dumps(schema, indent=2) for name, schema in spec["components"]["schemas"].items()}
    return render_template(
        "api/docs.html",
        spec=spec,
        operations=operations,
        schemas=schemas,
        problem_types=PROBLEM_TYPES,
        active="api-docs",
    )
