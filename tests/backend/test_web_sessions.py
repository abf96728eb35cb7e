"""Dashboard sessions end on the server: a cookie saved before logging out (or before a new password, or
"log out other sessions") opens nothing; idle and absolute lifetimes hold however the cookie is renewed.
Time moves through the app's injectable clock (backend.clock), never by sleeping."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from api_helpers import Api
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from web_helpers import COOKIE, csrf_token, login, set_password

from backend.clock import CLOCK_KEY
from backend.db import EXTENSION_KEY
from backend.models import ApiToken, WebSession


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock(app: Flask) -> FakeClock:
    fake = FakeClock()
    app.extensions[CLOCK_KEY] = fake
    return fake


@pytest.fixture
def client(app: Flask, alice: Api, clock: FakeClock) -> FlaskClient:
    set_password(app, alice.user_id)
    return app.test_client()


def saved_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    return cookie.value


def replay(app: Flask, cookie: str) -> FlaskClient:
    """Another browser (the attacker's) holding a copy of the cookie."""
    thief = app.test_client()
    thief.set_cookie(COOKIE, cookie)
    return thief


def sessions(app: Flask) -> int:
    with app.extensions[EXTENSION_KEY].session() as session:
        return session.scalar(select(func.count()).select_from(WebSession)) or 0


def tokens(app: Flask) -> int:
    with app.extensions[EXTENSION_KEY].session() as session:
        return session.scalar(select(func.count()).select_from(ApiToken)) or 0


def test_a_cookie_saved_before_logout_opens_nothing_after_it(app: Flask, client: FlaskClient) -> None:
    login(client, "alice")
    page = client.get("/tokens").get_data(as_text=True)
    cookie = saved_cookie(client)
    assert replay(app, cookie).get("/workouts").status_code == 200  # a copy works while logged in
    assert client.post("/logout", data={"csrf_token": csrf_token(page)}).status_code == 302
    assert sessions(app) == 0
    thief = replay(app, cookie)
    for path in ("/workouts", "/tokens"):
        assert thief.get(path).status_code == 302, path
    before = tokens(app)
    created = thief.post("/tokens", data={"label": "Stolen", "csrf_token": csrf_token(page)})
    assert created.status_code in (302, 400) and tokens(app) == before  # no token for the thief
    thief.get("/workouts")  # and its use renews nothing: the cookie it gets back holds no login
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    assert "_user_id" not in serializer.loads(saved_cookie(thief))


def test_a_new_password_ends_every_session_through_the_cli(app: Flask, client: FlaskClient) -> None:
    login(client, "alice")
    cookie = saved_cookie(client)
    result = app.test_cli_runner().invoke(
        args=["users", "set-password", "alice"], input="another good one\nanother good one\n"
    )
    assert result.exit_code == 0, result.output
    assert sessions(app) == 0
    assert replay(app, cookie).get("/workouts").status_code == 302


def test_idle_lifetime_ends_a_session_left_alone(app: Flask, client: FlaskClient, clock: FakeClock) -> None:
    login(client, "alice")
    idle = app.permanent_session_lifetime
    clock.advance(seconds=idle.total_seconds() - 60)
    assert client.get("/workouts").status_code == 200  # a visit within the idle time renews it
    clock.advance(seconds=idle.total_seconds() - 60)
    assert client.get("/workouts").status_code == 200
    clock.advance(seconds=idle.total_seconds() + 1)
    response = client.get("/workouts")
    assert response.status_code == 302
    assert "Your session expired." in client.get(response.headers["Location"]).get_data(as_text=True)
    assert sessions(app) == 0


def test_absolute_lifetime_ends_even_a_busy_session(
    app: Flask, client: FlaskClient, clock: FakeClock
) -> None:
    login(client, "alice")
    absolute_s = float(app.config["SESSION_ABSOLUTE_LIFETIME_S"])
    step_s = app.permanent_session_lifetime.total_seconds() / 2
    visits = 0
    while visits * step_s < absolute_s - step_s:
        clock.advance(seconds=step_s)
        assert client.get("/workouts").status_code == 200, visits
        visits += 1
    clock.advance(seconds=step_s + 1)  # past the absolute lifetime, though last seen half an idle ago
    assert client.get("/workouts").status_code == 302


def test_log_out_other_sessions(app: Flask, client: FlaskClient) -> None:
    login(client, "alice")
    laptop = app.test_client()
    login(laptop, "alice")
    assert sessions(app) == 2
    page = client.get("/tokens").get_data(as_text=True)
    assert "Log out other sessions" in page
    response = client.post("/sessions/end-others", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 303
    assert "Logged out 1 other session(s)." in client.get("/tokens").get_data(as_text=True)
    assert laptop.get("/workouts").status_code == 302
    assert client.get("/workouts").status_code == 200
    assert client.post("/sessions/end-others").status_code == 400  # CSRF-protected like every form


def test_the_cookie_holds_no_user_id_only_a_session_key(app: Flask, client: FlaskClient) -> None:
    login(client, "alice")
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    data = serializer.loads(saved_cookie(client))
    assert len(data["_user_id"]) >= 40 and ":" not in data["_user_id"]
    forged = serializer.dumps({**data, "_user_id": "1"})  # even with the secret key: no such session
    assert replay(app, forged).get("/workouts").status_code == 302
