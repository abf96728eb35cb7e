"""Operations: probes, configuration from the environment, structured request logs, the OpenAPI document."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
from api_helpers import Api, app_config, empty_database
from flask import Flask
from openapi_spec_validator import validate

from backend import create_app
from backend.db import EXTENSION_KEY, normalize_database_url
from backend.request_log import REQUEST_LOGGER, JsonFormatter
from backend.schemas import WorkoutIn


def test_healthz_and_readyz(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["status"] == "ready" and ready.json["revision"]


def test_readyz_fails_on_an_unmigrated_database(tmp_path: Path) -> None:
    with empty_database("sqlite", tmp_path) as url:
        app = create_app(app_config(url))
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        assert response.content_type == "application/problem+json"
        assert app.test_client().get("/healthz").status_code == 200  # liveness does not depend on it
        app.extensions[EXTENSION_KEY].dispose()


def test_readyz_fails_when_the_database_is_unreachable() -> None:
    app = create_app(app_config("postgresql://nobody@127.0.0.1:9/none?connect_timeout=1"))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert "database unavailable" in response.json["detail"]


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    default = create_app()
    assert default.config["DATABASE_URL"] == f"sqlite:///{Path(default.instance_path) / 'respira.sqlite3'}"
    default.extensions[EXTENSION_KEY].dispose()

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite3'}")
    monkeypatch.setenv("RESPIRA_MAX_CONTENT_LENGTH", "4096")
    monkeypatch.setenv("RESPIRA_AUTH_FAILURE_LIMIT", "5 per hour")
    configured = create_app()
    assert configured.config["DATABASE_URL"].endswith("env.sqlite3")
    assert configured.config["MAX_CONTENT_LENGTH"] == 4096
    assert configured.config["AUTH_FAILURE_LIMIT"] == "5 per hour"
    configured.extensions[EXTENSION_KEY].dispose()


def test_postgres_urls_use_psycopg_3() -> None:
    assert normalize_database_url("postgresql://u:p@h:5432/db") == "postgresql+psycopg://u:p@h:5432/db"
    assert normalize_database_url("postgres://h/db") == "postgresql+psycopg://h/db"
    assert normalize_database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_one_json_log_line_per_request(alice: Api) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(REQUEST_LOGGER)
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        response = alice.get("/api/v1/workouts?limit=5", headers={"X-Request-ID": "client-abc-123"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert response.headers["X-Request-ID"] == "client-abc-123"
    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["msg"] == "request" and entry["level"] == "info"
    assert entry["method"] == "GET" and entry["path"] == "/api/v1/workouts" and entry["status"] == 200
    assert entry["request_id"] == "client-abc-123" and entry["user_id"] == alice.user_id
    assert isinstance(entry["duration_ms"], float)


def test_request_ids_are_generated_when_absent_or_unsafe(app: Flask) -> None:
    client = app.test_client()
    assert re.fullmatch(r"[0-9a-f]{32}", client.get("/healthz").headers["X-Request-ID"])
    assert client.get("/healthz", headers={"X-Request-ID": "<script>"}).headers["X-Request-ID"] != "<script>"


def test_openapi_document_is_valid_and_complete(app: Flask) -> None:
    spec = app.test_client().get("/api/v1/openapi.json").json
    validate(spec)  # against the official OpenAPI 3.1 schema
    assert spec["openapi"].startswith("3.")
    api_rules = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    documented = {
        (path.replace("{", "<").replace("}", ">"), method.upper())
        for path, ops in spec["paths"].items()
        for method in ops
    }
    assert documented == api_rules
    put = spec["paths"]["/api/v1/workouts/{workout_id}"]["put"]
    assert put["security"] == [{"bearerAuth": []}]
    assert put["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/WorkoutIn")
    assert "application/problem+json" in put["responses"]["422"]["content"]
    append = spec["paths"]["/api/v1/workouts/{workout_id}/stages/{stage}/segments"]["post"]
    assert "Idempotency-Key" in [p["name"] for p in append["parameters"]]
    listing = spec["paths"]["/api/v1/workouts"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"from", "to", "activity", "limit", "cursor"}
    # Unknown fields are refused, and the document says so.
    schemas = spec["components"]["schemas"]
    assert schemas["WorkoutIn"]["additionalProperties"] is False
    segment = schemas["Segment"]["properties"]
    # Issue 19: a rate of 0-80 or null (with a reason from the documented enum), and a confidence 0-1.
    assert {"type": "null"} in segment["rr_bpm"]["anyOf"]
    assert [a["maximum"] for a in segment["rr_bpm"]["anyOf"] if a.get("type") == "number"] == [80]
    assert [a["maximum"] for a in segment["rr_confidence"]["anyOf"] if a.get("type") == "number"] == [1]
    reasons = spec["components"]["schemas"]["NoRateReason"]["enum"]
    assert reasons == ["no_breathing", "too_noisy"]
    assert set(WorkoutIn.model_fields) <= set(schemas["WorkoutIn"]["properties"])


def test_docs_page_lists_every_operation_and_loads_nothing_from_elsewhere(app: Flask) -> None:
    client = app.test_client()
    spec = client.get("/api/v1/openapi.json").json
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    html = page.get_data(as_text=True)
    for path, ops in spec["paths"].items():
        for op in ops.values():
            assert f'id="{op["operationId"]}"' in html and path in html
    assert 'id="problem-validation-error"' in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the docs page must work offline"


def test_backend_imports_neither_training_nor_coreml() -> None:
    """The service must deploy without torch: imports point one way (coreml -> training, never backend ->)."""
    package = Path(__file__).resolve().parents[2] / "backend"
    pattern = re.compile(r"^\s*(from|import)\s+(training|coreml)\b", re.MULTILINE)
    offenders = [str(p) for p in package.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
