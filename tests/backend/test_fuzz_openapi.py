"""Schemathesis over every operation of /api/v1/openapi.json: no 5xx, and answers that match the document.

The operations come from the document the app serves at test time, so endpoints added later are fuzzed
without touching this file. Requests go through the Flask app in-process (WSGI, no network), with a
valid bearer token, on SQLite and, when TEST_DATABASE_URL is set, on PostgreSQL (which refuses some
inputs SQLite takes, such as NUL characters in text). Examples are bounded and derandomized, so a run
is repeatable and a failure reproduces.
"""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from api_helpers import Api, app_config, sample_workout, workout_url
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis import checks

from backend import create_app
from backend.db import EXTENSION_KEY

pytestmark = pytest.mark.slow
EXAMPLES_PER_OPERATION = 20
# What the API promises: no 5xx; status codes, content types, headers and bodies as documented; input the
# schema calls invalid is refused; the token is really checked. Not `positive_data_acceptance`: rules
# across fields (a pulse point twice, a segment outside its stage) are not JSON Schema, so a schema-valid
# body may rightly get 422.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.ignored_auth,
]


OPENAPI_PATH = "/api/v1/openapi.json"


def served_document() -> dict:
    """The document as the app serves it (it is built from the URL map; no database is touched)."""
    app = create_app(app_config("sqlite://"))
    try:
        return app.test_client().get(OPENAPI_PATH).json
    finally:
        app.extensions[EXTENSION_KEY].dispose()


# Loaded from a dict, not with schemathesis.pytest.from_fixture (which breaks on pytest 9); each case is
# then sent to the test's own app (`app=`), in-process.
DOCUMENT = served_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,  # no example database: every run tests exactly the same cases
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_operation(case: schemathesis.Case, app: Flask, alice: Api) -> None:
    case.operation.schema.app = app  # this test's app, for the probes some checks send too
    case.call_and_validate(app=app, headers=alice.headers(), checks=CHECKS)


def test_the_fuzzed_document_is_the_served_one(app: Flask) -> None:
    """Guards the fuzzing above: it covers what the app serves, and that is the whole API."""
    served = app.test_client().get(OPENAPI_PATH).json
    assert served == DOCUMENT
    paths = served["paths"]
    assert "/api/v1/workouts/{workout_id}" in paths
    assert {"get", "put", "delete"} <= set(paths["/api/v1/workouts/{workout_id}"])
    assert "/api/v1/trends/stages" in paths


def test_values_the_fuzzer_found_are_refused_with_422(alice: Api) -> None:
    """Found while fuzzing: NUL in text made PostgreSQL fail (500), and a number as a date was read as
    Unix time (`?to=2026` meant 1970). Both now get a 422 naming the field, on every database."""
    url = workout_url(uuid.uuid4())
    answer = alice.put(url, json=sample_workout(model_version="tclstm\x00"))
    assert answer.status_code == 422 and answer.json["errors"][0]["field"] == "model_version"
    assert alice.get(url).status_code == 404
    for query in ("to=2026", "from=0.5"):
        answer = alice.get(f"/api/v1/workouts?{query}")
        assert answer.status_code == 422, query
        assert answer.json["errors"][0]["field"] == query.split("=")[0]
