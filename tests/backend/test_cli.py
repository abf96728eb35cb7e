"""`flask --app backend users ...` and `tokens ...`: the exact commands people and tools type."""

from __future__ import annotations

from api_helpers import Api
from flask import Flask
from sqlalchemy import select

from backend.db import EXTENSION_KEY
from backend.models import ApiToken, User


def user(app: Flask, name: str) -> User | None:
    with app.extensions[EXTENSION_KEY].session() as session:
        return session.scalars(select(User).where(User.name == name)).one_or_none()


def test_users_create_with_and_without_password(app: Flask) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "dana"])
    assert result.exit_code == 0 and "created user 'dana'" in result.output
    assert user(app, "dana").password_hash is None

    result = runner.invoke(args=["users", "create", "erin", "--password"], input="s3cret pass\ns3cret pass\n")
    assert result.exit_code == 0, result.output
    erin = user(app, "erin")
    assert erin.password_hash and "s3cret" not in erin.password_hash
    assert erin.check_password("s3cret pass") and not erin.check_password("wrong")

    duplicate = runner.invoke(args=["users", "create", "dana"])
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output
    assert "dana" in runner.invoke(args=["users", "list"]).output


def test_users_create_refuses_a_short_password_as_set_password_does(app: Flask) -> None:
    runner = app.test_cli_runner()
    for command in (["users", "create", "fay", "--password"], ["users", "set-password", "dana"]):
        runner.invoke(args=["users", "create", "dana"])
        result = runner.invoke(args=command, input="x\nx\n")
        assert result.exit_code != 0 and "at least 8 characters" in result.output, command
    assert user(app, "fay") is None  # not created without a usable password


def test_users_create_password_stdin_reads_one_line_and_never_prompts(app: Flask) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "fay", "--password-stdin"], input="long enough pw\n")
    assert result.exit_code == 0, result.output
    assert "Password" not in result.output and "created user 'fay' with a password" in result.output
    assert user(app, "fay").check_password("long enough pw")

    empty = runner.invoke(args=["users", "create", "gus", "--password-stdin"], input="")
    assert empty.exit_code == 2 and "no password" in empty.output and user(app, "gus") is None
    short = runner.invoke(args=["users", "create", "gus", "--password-stdin"], input="short\n")
    assert short.exit_code == 2 and "at least 8 characters" in short.output and user(app, "gus") is None
    both = runner.invoke(args=["users", "create", "gus", "--password", "--password-stdin"], input="x\n")
    assert both.exit_code == 2 and "choose one of" in both.output and user(app, "gus") is None


def test_tokens_create_prints_a_working_token_once(app: Flask) -> None:
    runner = app.test_cli_runner()
    runner.invoke(args=["users", "create", "dana"])
    result = runner.invoke(args=["tokens", "create", "dana", "--label", "Dana's iPhone"])
    assert result.exit_code == 0
    token = result.output.strip()
    assert token.startswith("rsp_") and len(token) > 40 and "\n" not in token
    api = Api(app, token, user(app, "dana").id)
    assert api.get("/api/v1/workouts").status_code == 200

    listing = runner.invoke(args=["tokens", "list", "dana"]).output
    assert "Dana's iPhone" in listing and token not in listing and token[:12] in listing
    assert "never" not in listing  # it has been used


def test_tokens_revoke_by_id_and_all(app: Flask) -> None:
    runner = app.test_cli_runner()
    runner.invoke(args=["users", "create", "dana"])
    first = runner.invoke(args=["tokens", "create", "dana"]).output.strip()
    second = runner.invoke(args=["tokens", "create", "dana", "--label", "Watch"]).output.strip()
    with app.extensions[EXTENSION_KEY].session() as session:
        first_id = session.scalars(select(ApiToken.id).where(ApiToken.label.is_(None))).one()
    assert runner.invoke(args=["tokens", "revoke", "dana", "--id", str(first_id)]).exit_code == 0
    dana = user(app, "dana").id
    assert Api(app, first, dana).get("/api/v1/workouts").status_code == 401
    assert Api(app, second, dana).get("/api/v1/workouts").status_code == 200
    assert "revoked 1" in runner.invoke(args=["tokens", "revoke", "dana", "--all"]).output
    assert Api(app, second, dana).get("/api/v1/workouts").status_code == 401


def test_cli_errors_are_clear(app: Flask) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["tokens", "create", "nobody"])
    assert result.exit_code != 0 and "no user named 'nobody'" in result.output
    runner.invoke(args=["users", "create", "dana"])
    result = runner.invoke(args=["tokens", "revoke", "dana"])
    assert result.exit_code != 0 and "exactly one of --id, --label, --all" in result.output
    result = runner.invoke(args=["tokens", "revoke", "dana", "--label", "nothing"])
    assert result.exit_code != 0 and "no live token matched" in result.output


def test_db_prune_idempotency_forgets_only_old_answers(app: Flask) -> None:
    from datetime import timedelta

    from backend.db import utcnow
    from backend.models import IdempotencyRecord

    runner = app.test_cli_runner()
    runner.invoke(args=["users", "create", "dana"])
    dana = user(app, "dana").id
    with app.extensions[EXTENSION_KEY].session(write=True) as session, session.begin():
        for key, age_days in (("old", 30), ("edge", 6), ("new", 0)):
            session.add(
                IdempotencyRecord(
                    user_id=dana,
                    key=key,
                    fingerprint="f" * 64,
                    response_status=201,
                    response_body={},
                    created_at=utcnow() - timedelta(days=age_days),
                )
            )
    result = runner.invoke(args=["db", "prune-idempotency", "--older-than-days", "7"])
    assert result.exit_code == 0 and "deleted 1 idempotency record" in result.output
    with app.extensions[EXTENSION_KEY].session() as session:
        assert sorted(session.scalars(select(IdempotencyRecord.key))) == ["edge", "new"]
    assert runner.invoke(args=["db", "prune-idempotency", "--older-than-days", "0"]).exit_code != 0
