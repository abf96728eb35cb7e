"""Security headers on every response: each route of the URL map, each method, logged in or not, plus
the error answers (404, 405, 413) that no view produces."""

from __future__ import annotations

import uuid

import pytest
from api_helpers import Api
from flask import Flask
from flask.testing import FlaskClient
from web_helpers import login, set_password

from backend.web.security import SECURITY_HEADERS

# A value for each kind of URL argument the routes take.
ARGUMENTS = {"workout_id": str(uuid.uuid4()), "job_id": str(uuid.uuid4()), "stage": 1, "token_id": 1}


def every_request(app: Flask) -> list[tuple[str, str]]:
    """(method, URL) for every rule of the URL map and every method it answers."""
    requests = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            args = {name: ARGUMENTS.get(name, "web/dashboard.css") for name in rule.arguments}
            url = app.url_for(rule.endpoint, **args) if rule.arguments else rule.rule
            requests += [(method, url) for method in sorted(rule.methods or ())]
    return requests


def assert_secure(response, what: str) -> None:
    for name, value in SECURITY_HEADERS.items():
        if name == "Cache-Control":
            assert response.headers.get(name), what  # static files keep their own caching rule
        else:
            assert response.headers.get(name) == value, f"{what}: {name}"


@pytest.fixture
def logged_in(app: Flask, alice: Api) -> FlaskClient:
    set_password(app, alice.user_id)
    client = app.test_client()
    assert login(client, "alice").status_code == 302
    return client


def test_every_route_and_method_carries_the_security_headers(
    app: Flask, alice: Api, logged_in: FlaskClient
) -> None:
    requests = every_request(app)
    assert len(requests) > 40  # the whole map, not a handful
    anonymous = app.test_client()
    for method, url in requests:
        for who, client, headers in (
            ("anonymous", anonymous, {}),
            ("token", anonymous, alice.headers()),
            ("session", logged_in, {}),
        ):
            response = client.open(url, method=method, headers=headers)
            assert_secure(response, f"{method} {url} ({who}) -> {response.status_code}")


def test_answers_no_view_makes_carry_them_too(app: Flask, alice: Api) -> None:
    client = app.test_client()
    for response, what in (
        (client.get("/no/such/page"), "404 page"),
        (client.get("/api/v1/nothing"), "404 problem"),
        (client.delete("/api/v1/openapi.json"), "405"),
        (alice.post("/api/v1/workouts", data=b"x" * (2 * 1024 * 1024)), "413"),
        (client.get("/api/v1/docs"), "API reference"),
    ):
        assert response.status_code in (200, 404, 405, 413, 415), what
        assert_secure(response, what)
