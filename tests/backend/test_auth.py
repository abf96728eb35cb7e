"""Bearer tokens: required, hashed at rest, revocable, last use recorded; repeated failures rate-limited."""

from __future__ import annotations

from api_helpers import Api, app_config, make_user, wipe
from sqlalchemy import select

from backend import create_app
from backend.db import EXTENSION_KEY
from backend.models import ApiToken
from backend.tokens import hash_token

LIST = "/api/v1/workouts"


def token_row(api: Api) -> ApiToken:
    with api.app.extensions[EXTENSION_KEY].session() as session:
        return session.scalars(select(ApiToken).where(ApiToken.user_id == api.user_id)).one()


def test_missing_or_malformed_authorization_is_401_with_a_challenge(alice: Api) -> None:
    client = alice.app.test_client()
    for headers in (
        {},
        {"Authorization": alice.token},
        {"Authorization": f"Basic {alice.token}"},
        {"Authorization": "Bearer "},
    ):
        response = client.get(LIST, headers=headers)
        assert response.status_code == 401
        assert response.content_type == "application/problem+json"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json["errors"][0]["field"] == "Authorization"


def test_wrong_token_is_401_invalid_token(alice: Api) -> None:
    response = alice.app.test_client().get(LIST, headers={"Authorization": "Bearer rsp_not-a-real-token"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_token_is_stored_only_as_a_hash(alice: Api) -> None:
    row = token_row(alice)
    assert row.token_hash == hash_token(alice.token) and alice.token not in (row.token_hash, row.prefix)
    assert alice.token.startswith(row.prefix)


def test_use_records_last_used_time(alice: Api) -> None:
    assert token_row(alice).last_used_at is None
    assert alice.get(LIST).status_code == 200
    first_use = token_row(alice).last_used_at
    assert first_use is not None and first_use.tzinfo is not None
    # Within the touch interval (60 s) further use does not write again: reads stay read-only.
    assert alice.get(LIST).status_code == 200
    assert token_row(alice).last_used_at == first_use


def test_last_use_is_recorded_even_when_the_request_fails(alice: Api) -> None:
    assert alice.get("/api/v1/workouts/not-a-uuid").status_code == 422
    assert token_row(alice).last_used_at is not None


def test_revoked_token_is_refused(alice: Api) -> None:
    assert alice.get(LIST).status_code == 200
    runner = alice.app.test_cli_runner()
    result = runner.invoke(args=["tokens", "revoke", "alice", "--label", "Alice's iPhone"])
    assert result.exit_code == 0, result.output
    assert "revoked 1 token(s)" in result.output
    assert alice.get(LIST).status_code == 401
    assert token_row(alice).revoked_at is not None


def test_each_device_has_its_own_token(alice: Api) -> None:
    runner = alice.app.test_cli_runner()
    second = runner.invoke(args=["tokens", "create", "alice", "--label", "Watch"]).output.strip()
    watch = Api(alice.app, second, alice.user_id)
    assert watch.get(LIST).status_code == 200
    runner.invoke(args=["tokens", "revoke", "alice", "--label", "Watch"])
    assert watch.get(LIST).status_code == 401
    assert alice.get(LIST).status_code == 200  # the phone's token still works


def test_repeated_auth_failures_are_rate_limited_per_client(database_url: str) -> None:
    app = create_app(app_config(database_url, AUTH_FAILURE_LIMIT="3 per minute"))
    wipe(app.extensions[EXTENSION_KEY])  # failures are counted in the database, shared with other tests
    _, token = make_user(app, "mallory-target")
    attacker = app.test_client()
    attacker.environ_base["REMOTE_ADDR"] = "203.0.113.7"
    bad = {"Authorization": "Bearer rsp_guess"}
    assert [attacker.get(LIST, headers=bad).status_code for _ in range(3)] == [401, 401, 401]
    blocked = attacker.get(LIST, headers=bad)
    assert blocked.status_code == 429
    assert blocked.content_type == "application/problem+json"
    assert int(blocked.headers["Retry-After"]) >= 1
    # While blocked, even a right token from that address waits: guessing must not pay off.
    assert attacker.get(LIST, headers={"Authorization": f"Bearer {token}"}).status_code == 429
    # Other clients are unaffected, and requests without credentials do not count as failures.
    honest = app.test_client()
    honest.environ_base["REMOTE_ADDR"] = "198.51.100.1"
    assert [honest.get(LIST).status_code for _ in range(5)] == [401] * 5
    assert honest.get(LIST, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    app.extensions[EXTENSION_KEY].dispose()


def test_public_documents_need_no_token(app: object) -> None:
    client = app.test_client()  # type: ignore[attr-defined]
    assert client.get("/api/v1/openapi.json").status_code == 200
    assert client.get("/api/v1/docs").status_code == 200
    assert client.get("/healthz").status_code == 200
