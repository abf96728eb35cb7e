"""`flask --app backend ...` commands: users, device tokens and database migrations.

flask --app backend db upgrade                  # create or migrate the schema
flask --app backend users create alice --password
printf '%s\n' "$PASSWORD" | flask --app backend users create alice --password-stdin   # for scripts
flask --app backend users set-password alice    # dashboard password (ends alice's open sessions)
flask --app backend tokens create alice --label "Alice's iPhone"   # prints the token once
flask --app backend tokens list alice
flask --app backend tokens revoke alice --label "Alice's iPhone"   # or --id 3, or --all
flask --app backend import apple-health alice export.zip          # see backend/imports/cli.py
flask --app backend db prune-idempotency --older-than-days 7      # forget old Idempotency-Key answers
flask --app backend queue worker [--burst]      # run imports from RESPIRA_QUEUE_URL (backend/tasks.py)
"""

from __future__ import annotations

import gc
import sys

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend import migrate, tokens
from backend.background import app_object
from backend.db import get_db
from backend.models import ApiToken, IdempotencyRecord, User
from backend.web.sessions import end_web_sessions

MIN_PASSWORD_CHARS = 8  # for every dashboard password, however it is set
users_cli = AppGroup("users", help="Manage users.")
tokens_cli = AppGroup("tokens", help="Manage device API tokens.")
db_cli = AppGroup("db", help="Database migrations (Alembic).")


def _long_enough(password: str) -> str:
    """One rule for every dashboard password, however it is given."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise click.BadParameter(f"use at least {MIN_PASSWORD_CHARS} characters", param_hint="password")
    return password


def _ask_password(prompt: str) -> str:
    """Prompt twice for a dashboard password and refuse a short one (one rule for create and set)."""
    return _long_enough(click.prompt(prompt, hide_input=True, confirmation_prompt=True))


def _user(session: Session, name: str) -> User:
    user = session.scalars(select(User).where(User.name == name)).one_or_none()
    if user is None:
        raise click.ClickException(f"no user named {name!r}")
    return user


def _password_from_stdin() -> str:
    """The first line of standard input, for scripts (nothing is echoed, nothing is asked)."""
    line = sys.stdin.readline()  # (click.get_text_stream is deprecated: removed in Click 9)
    password = line.rstrip("\r\n")
    if not password:
        raise click.BadParameter(
            "standard input held no password (one line expected)", param_hint="--password-stdin"
        )
    return _long_enough(password)


@users_cli.command("create")
@click.argument("name")
@click.option("--password", "ask_password", is_flag=True, help="Prompt for a dashboard password.")
@click.option(
    "--password-stdin",
    "password_stdin",
    is_flag=True,
    help="Read the dashboard password from the first line of standard input (no prompt; for scripts).",
)
def create_user(name: str, ask_password: bool, password_stdin: bool) -> None:
    """Create user NAME (with --password or --password-stdin, one that can also log in to the dashboard)."""
    if not 1 <= len(name) <= 80:
        raise click.BadParameter("must be 1-80 characters", param_hint="NAME")
    if ask_password and password_stdin:
        raise click.UsageError("choose one of --password and --password-stdin")
    password = None
    if password_stdin:
        password = _password_from_stdin()
    elif ask_password:
        password = _ask_password("Password")
    try:
        with get_db().session(write=True) as session, session.begin():
            user = User(name=name)
            if password is not None:
                user.set_password(password)
            session.add(user)
    except IntegrityError:
        raise click.ClickException(f"user {name!r} already exists") from None
    click.echo(f"created user {name!r}" + (" with a password" if password else ""))


@users_cli.command("set-password")
@click.argument("name")
def set_password(name: str) -> None:
    """Set or change user NAME's dashboard password (their open dashboard sessions end)."""
    with get_db().session() as session:
        _user(session, name)  # fail before asking for a password
    password = _ask_password("New password")
    with get_db().session(write=True) as session, session.begin():
        user = _user(session, name)
        user.set_password(password)
        end_web_sessions(session, user.id)
    click.echo(f"password of {name!r} set; they can log in to the dashboard")


@users_cli.command("list")
def list_users() -> None:
    """List users."""
    with get_db().session() as session:
        for user in session.scalars(select(User).order_by(User.name)):
            click.echo(f"{user.id}\t{user.name}\t{'password' if user.password_hash else '-'}")


@tokens_cli.command("create")
@click.argument("name")
@click.option("--label", default=None, help='The device the token is for, e.g. "Alice\'s iPhone".')
def create_token(name: str, label: str | None) -> None:
    """Create an API token for user NAME and print it (it is shown only this once)."""
    with get_db().session(write=True) as session, session.begin():
        _, plaintext = tokens.issue_token(session, _user(session, name), label)
    click.echo(plaintext)


@tokens_cli.command("list")
@click.argument("name")
def list_tokens(name: str) -> None:
    """List user NAME's tokens: id, prefix, label, created, last used, revoked."""
    with get_db().session() as session:
        user = _user(session, name)
        for t in session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)):
            fields = (
                t.id,
                t.prefix + "...",
                t.label or "-",
                t.created_at.isoformat(timespec="seconds"),
                t.last_used_at.isoformat(timespec="seconds") if t.last_used_at else "never",
                f"revoked {t.revoked_at.isoformat(timespec='seconds')}" if t.revoked_at else "live",
            )
            click.echo("\t".join(str(f) for f in fields))


@tokens_cli.command("revoke")
@click.argument("name")
@click.option("--id", "token_id", type=int, default=None, help="Revoke the token with this id.")
@click.option("--label", default=None, help="Revoke the tokens of this device.")
@click.option("--all", "revoke_all", is_flag=True, help="Revoke every token of the user.")
def revoke_token(name: str, token_id: int | None, label: str | None, revoke_all: bool) -> None:
    """Revoke user NAME's tokens chosen by --id, --label or --all."""
    if sum((token_id is not None, label is not None, revoke_all)) != 1:
        raise click.UsageError("choose exactly one of --id, --label, --all")
    with get_db().session(write=True) as session, session.begin():
        count = tokens.revoke_tokens(session, _user(session, name), token_id=token_id, label=label)
    if count == 0:
        raise click.ClickException("no live token matched")
    click.echo(f"revoked {count} token(s)")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: head)."""
    migrate.upgrade(get_db(), revision)
    click.echo(f"database at {migrate.current_revision(get_db())}")


@db_cli.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION ('base' empties it)."""
    migrate.downgrade(get_db(), revision)
    click.echo(f"database at {migrate.current_revision(get_db()) or 'base'}")


@db_cli.command("current")
def db_current() -> None:
    """Print the database's revision."""
    click.echo(migrate.current_revision(get_db()) or "base (empty)")


@db_cli.command("prune-idempotency")
@click.option(
    "--older-than-days",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="Forget stored answers to Idempotency-Key requests older than this.",
)
def db_prune_idempotency(older_than_days: int) -> None:
    """Delete stored Idempotency-Key answers past the retry window (run it daily, e.g. from cron).

    A client retries within minutes or hours, so a week is a generous window; after it, the same key
    is treated as new. Rows are otherwise kept forever and grow with every append.
    """
    from datetime import timedelta

    from sqlalchemy import delete

    from backend.db import rowcount, utcnow

    cutoff = utcnow() - timedelta(days=older_than_days)
    with get_db().session(write=True) as session, session.begin():
        result = session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff))
    click.echo(f"deleted {rowcount(result)} idempotency record(s) older than {older_than_days} day(s)")


queue_cli = AppGroup("queue", help="The task queue for long work (RESPIRA_QUEUE_URL).")


@queue_cli.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
def queue_worker(burst: bool) -> None:
    """Run queued work (imports, exports, account deletions). First re-queues tasks whose worker on this
    host died, and unfinished account deletions (a restart recovers)."""
    from rq import Worker

    from backend import tasks

    app = app_object()
    queue = tasks.queue_of(app)
    if queue is None:
        raise click.UsageError("RESPIRA_QUEUE_URL is not set: long work runs inside the web server.")
    tasks.use_app_in_worker(app)
    recovered = tasks.recover_orphans(app)
    click.echo(f"queue {queue.name!r}: {recovered} task(s) re-queued (dead workers, unfinished deletions)")
    # The app, its modules and settings live as long as the worker: out of the garbage collector's
    # generations, so the many short-lived objects of a job (an export's ORM pages) do not make every
    # full collection walk them again (measured in-process: half of an export's CPU; docs/benchmarks.md).
    gc.freeze()
    Worker([queue], connection=queue.connection).work(burst=burst)


def register_cli(app: Flask) -> None:
    from backend.imports.cli import import_cli  # `import apple-health|health-auto-export|json USER FILE`

    for group in (users_cli, tokens_cli, db_cli, import_cli, queue_cli):
        app.cli.add_command(group)
