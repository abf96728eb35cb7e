"""Dashboard login, sessions, CSRF and the secret key, through Flask's test client."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from api_helpers import Api, app_config, make_user, wipe
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from web_helpers import COOKIE, PASSWORD, aged_cookie, csrf_token, login, set_password

from backend import create_app
from backend.db import EXTENSION_KEY
from backend.models import ApiToken
from backend.web.security import _instance_secret_key, load_secret_key, safe_next_url


@pytest.fixture
def client(app: Flask, alice: Api) -> FlaskClient:
    set_password(app, alice.user_id)
    return app.test_client()


def token_count(app: Flask) -> int:
    with app.extensions[EXTENSION_KEY].session() as session:
        return session.scalar(select(func.count()).select_from(ApiToken)) or 0


def test_pages_need_a_login_and_come_back_after_it(client: FlaskClient) -> None:
    for path in ("/", "/workouts", "/trends", "/tokens"):
        response = client.get(path)
        assert response.status_code == 302
        assert "/login" in response.headers["Location"] or path == "/"
    response = client.get("/trends?activity=running")
    assert response.headers["Location"] == "/login?next=/trends?activity%3Drunning"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Please log in to see that page." in page
    assert (
        '<label for="username">Username</label>' in page and '<label for="password">Password</label>' in page
    )

    response = login(client, "alice", next="/trends?activity=running")
    assert response.status_code == 302 and response.headers["Location"] == "/trends?activity=running"
    assert client.get("/trends?activity=running").status_code == 200


def test_session_cookie_is_http_only_same_site_and_not_secure_in_development(client: FlaskClient) -> None:
    response = login(client, "alice")
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith(COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Expires=" in cookie
    assert "Secure" not in cookie  # development serves plain HTTP (production: see below)


@pytest.mark.parametrize(("name", "password"), [("alice", "wrong password"), ("mallory", PASSWORD), ("", "")])
def test_failed_login_says_so_and_logs_nobody_in(client: FlaskClient, name: str, password: str) -> None:
    response = login(client, name, password)
    assert response.status_code == (400 if not name else 401)
    page = response.get_data(as_text=True)
    if name:
        assert "Wrong username or password." in page  # the same words whether or not the user exists
    else:
        assert "This field is required." in page and 'aria-invalid="true"' in page
    assert client.get("/workouts").status_code == 302


def test_users_without_a_password_cannot_log_in(app: Flask, alice: Api) -> None:
    response = login(app.test_client(), "alice", "")
    assert response.status_code == 400
    assert login(app.test_client(), "alice", "anything at all").status_code == 401


def test_repeated_failed_logins_are_rate_limited_per_address(database_url: str) -> None:
    app = create_app(app_config(database_url, AUTH_FAILURE_LIMIT="2 per minute"))
    wipe(app.extensions[EXTENSION_KEY])  # failures are counted in the database, shared with other tests
    user_id, _ = make_user(app, "carol")
    set_password(app, user_id)
    client = app.test_client()
    assert login(client, "carol", "nope").status_code == 401
    assert login(client, "carol", "still nope").status_code == 401
    blocked = login(client, "carol")  # even the right password, until the window passes
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
    assert "Too many failed log-ins" in blocked.get_data(as_text=True)
    app.extensions[EXTENSION_KEY].dispose()


def test_post_without_csrf_token_is_rejected(app: Flask, client: FlaskClient) -> None:
    no_token = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert no_token.status_code == 400 and "Form not accepted" in no_token.get_data(as_text=True)
    assert client.get("/workouts").status_code == 302  # not logged in

    login(client, "alice")
    before = token_count(app)
    for path, data in [("/tokens", {"label": "Sneaky"}), ("/logout", {}), ("/tokens/1/revoke", {})]:
        for extra in ({}, {"csrf_token": "forged"}):
            response = client.post(path, data={**data, **extra})
            assert response.status_code == 400, path
            assert "did not carry this session" in response.get_data(as_text=True)
    assert token_count(app) == before  # nothing created or revoked
    assert client.get("/workouts").status_code == 200  # and still logged in


def test_logout_ends_the_session(client: FlaskClient) -> None:
    login(client, "alice")
    page = client.get("/workouts").get_data(as_text=True)
    response = client.post("/logout", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert "You are logged out." in client.get("/login").get_data(as_text=True)
    assert client.get("/workouts").status_code == 302


def test_expired_session_is_refused_and_said_to_have_expired(app: Flask, client: FlaskClient) -> None:
    login(client, "alice")
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    lifetime_s = int(app.permanent_session_lifetime.total_seconds())
    client.set_cookie(COOKIE, aged_cookie(app, cookie.value, lifetime_s - 60))
    assert client.get("/workouts").status_code == 200  # still within its lifetime

    client.set_cookie(COOKIE, aged_cookie(app, cookie.value, lifetime_s + 1))
    response = client.get("/workouts")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert "Your session expired." in client.get(response.headers["Location"]).get_data(as_text=True)


def test_only_pages_renew_the_session_cookie(client: FlaskClient) -> None:
    login(client, "alice")
    renewed = [h for h in client.get("/workouts").headers.getlist("Set-Cookie") if h.startswith(COOKIE)]
    assert len(renewed) == 1  # a visit renews the login's lifetime
    for path in ("/static/web/dashboard.css", "/api/v1/workouts", "/healthz"):
        assert not client.get(path).headers.getlist("Set-Cookie"), path


def test_a_forged_cookie_is_just_not_logged_in(client: FlaskClient) -> None:
    login(client, "alice")
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    client.set_cookie(COOKIE, cookie.value[:-4] + "AAAA")
    response = client.get("/workouts")
    assert response.status_code == 302
    assert "Please log in to see that page." in client.get(response.headers["Location"]).get_data(
        as_text=True
    )


def test_a_new_password_ends_existing_sessions(app: Flask, alice: Api, client: FlaskClient) -> None:
    login(client, "alice")
    assert client.get("/workouts").status_code == 200
    set_password(app, alice.user_id, "another good password")
    assert client.get("/workouts").status_code == 302
    assert login(client, "alice", "another good password").status_code == 302


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/trends?from=2026-10-01", True),
        ("/", True),
        ("//evil.example/x", False),
        ("https://evil.example/", False),
        ("/\\evil.example", False),
        ("javascript:alert(1)", False),
        ("", False),
        (None, False),
    ],
)
def test_only_local_paths_are_followed_after_login(target: str | None, safe: bool) -> None:
    assert safe_next_url(target) == (target if safe else None)


def test_open_redirect_is_refused_at_login(client: FlaskClient) -> None:
    response = login(client, "alice", next="//evil.example/phish")
    assert response.headers["Location"] == "/workouts"


def test_the_api_does_not_accept_the_dashboard_session(client: FlaskClient) -> None:
    login(client, "alice")
    response = client.get("/api/v1/workouts")
    assert response.status_code == 401 and response.content_type == "application/problem+json"


def test_pages_carry_security_headers(client: FlaskClient) -> None:
    login(client, "alice")
    for path in ("/login", "/workouts", "/trends", "/tokens"):
        headers = client.get(path).headers
        assert "default-src 'none'" in headers["Content-Security-Policy"], path
        assert "script-src" not in headers["Content-Security-Policy"]  # no scripts at all
        assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_web_errors_are_html_and_api_errors_stay_problem_json(client: FlaskClient) -> None:
    login(client, "alice")
    page = client.get("/workouts/00000000-0000-4000-8000-000000000000")
    assert page.status_code == 404 and page.content_type.startswith("text/html")
    assert "There is no such workout among yours." in page.get_data(as_text=True)
    api = client.get("/api/v1/nothing-here")
    assert api.status_code == 404 and api.content_type == "application/problem+json"


# ---- secret key and production settings -----------------------------------------------------------


def test_production_refuses_to_start_without_a_strong_secret_key(database_url: str) -> None:
    with pytest.raises(RuntimeError, match="RESPIRA_SECRET_KEY is not set"):
        create_app(app_config(database_url, ENV="production"))
    with pytest.raises(RuntimeError, match="too short"):
        create_app(app_config(database_url, ENV="production", SECRET_KEY="short"))
    with pytest.raises(RuntimeError, match="RESPIRA_ENV must be one of"):
        create_app(app_config(database_url, ENV="staging"))


def test_gunicorn_counts_as_production(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVER_SOFTWARE", "gunicorn/23.0.0")  # what gunicorn's arbiter sets
    monkeypatch.delenv("RESPIRA_SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="refusing to start in production"):
        create_app(app_config(database_url))
    monkeypatch.setenv("RESPIRA_SECRET_KEY", "k" * 40)
    app = create_app(app_config(database_url))
    assert app.config["SECRET_KEY"] == "k" * 40 and app.config["SESSION_COOKIE_SECURE"] is True
    app.extensions[EXTENSION_KEY].dispose()


def test_production_cookie_is_secure(database_url: str) -> None:
    app = create_app(app_config(database_url, ENV="production", SECRET_KEY="s" * 48))
    user_id, _ = make_user(app, "dora")
    set_password(app, user_id)
    client = app.test_client()
    page = client.get("/login", base_url="https://localhost").get_data(as_text=True)
    response = client.post(
        "/login",
        base_url="https://localhost",
        data={"username": "dora", "password": PASSWORD, "csrf_token": csrf_token(page)},
        headers={"Referer": "https://localhost/login"},  # Flask-WTF checks it over HTTPS
    )
    assert response.status_code == 302
    cookie = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith(COOKIE + "="))
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    app.extensions[EXTENSION_KEY].dispose()


def test_development_key_is_generated_once_into_the_instance_folder(tmp_path: Path) -> None:
    first = _instance_secret_key(tmp_path / "instance")
    assert len(first) >= 32 and first == _instance_secret_key(tmp_path / "instance")
    mode = stat.S_IMODE(os.stat(tmp_path / "instance" / "secret_key").st_mode)
    assert mode == 0o600
    assert [p.name for p in (tmp_path / "instance").iterdir()] == ["secret_key"]  # no temp files left

    app = Flask("devapp", instance_path=str(tmp_path / "instance"))
    app.config.update(ENV="development", SECRET_KEY=None)
    load_secret_key(app)
    assert app.config["SECRET_KEY"] == first


def test_set_password_command(app: Flask, alice: Api) -> None:
    runner = app.test_cli_runner()
    unknown = runner.invoke(args=["users", "set-password", "nobody"])
    assert unknown.exit_code != 0 and "no user named 'nobody'" in unknown.output
    short = runner.invoke(args=["users", "set-password", "alice"], input="short\nshort\n")
    assert short.exit_code != 0 and "at least 8 characters" in short.output
    good = runner.invoke(args=["users", "set-password", "alice"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert good.exit_code == 0, good.output
    assert login(app.test_client(), "alice").status_code == 302
