"""`flask --app backend import ...`: the same imports as the API, from files on the server.

flask --app backend import apple-health alice export.zip      # or export.xml; prints progress
flask --app backend import health-auto-export alice push.json
flask --app backend import json alice respira-export.json     # a JSON export, into alice's account
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup
from pydantic import BaseModel, ValidationError
from sqlalchemy import select

from backend.db import get_db
from backend.exports.schemas import RespiraExport
from backend.imports import health_auto_export, json_restore, setting
from backend.imports.apple_health import ExportError, ExportLimits, check_export
from backend.imports.jobs import ImportSettings, create_job, record_finished_job, run_apple_health_job
from backend.imports.records import MARKERS
from backend.imports.schemas import HealthAutoExportPush
from backend.models import User
from backend.problems import ProblemError, field_errors

import_cli = AppGroup("import", help="Import health data (Apple Health, Health Auto Export, JSON exports).")
FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _user_id(name: str) -> int:
    with get_db().session() as session:
        user_id = session.scalar(select(User.id).where(User.name == name))
    if user_id is None:
        raise click.ClickException(f"no user named {name!r}")
    return user_id


def summary(counts: dict[str, int]) -> str:
    def part(label: str, key: str) -> str:
        return f"{counts.get(f'{key}_read', 0)} {label} ({counts.get(f'{key}_added', 0)} new)"

    parts = [
        part("heart-rate samples", "heart_rate"),
        part("respiratory-rate samples", "respiratory_rate"),
        part("health-app workouts", "health_workouts"),
    ]
    parts += [  # fitness markers, when the import read any
        part(MARKERS[kind].label, kind) for kind in MARKERS if counts.get(f"{kind}_read")
    ]
    text = ", ".join(parts)
    text += f", {counts.get('skipped', 0)} skipped"
    if "workouts_created" in counts:
        text = (
            f"{counts['workouts_created']} workouts created, {counts['workouts_replaced']} replaced, " + text
        )
    if "pulse_filled" in counts:
        text += (
            f"; {counts['workouts_linked']} workouts linked, {counts['samples_attached']} samples attached, "
            f"{counts['pulse_filled']} pulse points filled"
        )
    return text


def skipped_lines(skipped: list[dict[str, Any]]) -> str:
    """One line per skipped type and reason, most frequent first (the job's `skipped`)."""
    return "".join(f"  skipped {row['count']:,} {row['type']}: {row['reason']}\n" for row in skipped)


@import_cli.command("apple-health")
@click.argument("user")
@click.argument("file", type=FILE)
def import_apple_health(user: str, file: Path) -> None:
    """Import FILE (export.zip or export.xml from the Health app) for USER."""
    user_id, db = _user_id(user), get_db()
    try:
        check_export(file, ExportLimits.from_config(current_app.config))
    except ExportError as exc:
        raise click.ClickException(exc.message) from None
    job = create_job(db, user_id, "apple_health", file.name)
    click.echo(f"import {job.uuid}: {file}", err=True)

    def progress(done: int, total: int | None, counts: dict[str, int]) -> None:
        share = f" ({done / total:.0%})" if total else ""
        click.echo(f"  {done / 1e6:,.1f} MB read{share}, {counts['records_read']:,} records", err=True)

    done = run_apple_health_job(db, job.id, file, ImportSettings.from_app(current_app), on_batch=progress)
    if done is None or done.status != "succeeded":
        error = done.error if done is not None else "the user was deleted"
        stored = summary(done.counts) if done is not None else "nothing"
        raise click.ClickException(f"import failed: {error}\nstored before the failure: {stored}")
    click.echo(f"imported {file.name} for {user}: {summary(done.counts)}")
    click.echo(skipped_lines(done.skipped or []), nl=False)


def _load(model: type[BaseModel], file: Path) -> BaseModel:
    try:
        return model.model_validate_json(file.read_bytes())
    except ValidationError as exc:
        lines = [f"  {e.field}: {e.detail}" for e in field_errors(exc, "body")[:20]]
        raise click.ClickException(f"{file} is not valid:\n" + "\n".join(lines)) from None


def _run_in_transaction(user: str, file: Path, kind: str, model: type[BaseModel]) -> None:
    user_id, body = _user_id(user), _load(model, file)
    tolerance_s = float(setting(current_app.config, "IMPORT_PULSE_TOLERANCE_S"))
    try:
        with get_db().session(write=True) as session, session.begin():
            skipped: list[dict[str, Any]] = []
            if isinstance(body, RespiraExport):
                counts, warnings = json_restore.restore(session, user_id, body)
            elif isinstance(body, HealthAutoExportPush):
                counts, warnings, skipped = health_auto_export.import_push(
                    session, user_id, body, tolerance_s
                )
            else:
                raise TypeError(f"no importer for {type(body).__name__}")
            record_finished_job(session, user_id, kind, counts, warnings, file.name, skipped)
    except ProblemError as exc:
        details = "\n".join(f"  {e.field}: {e.detail}" for e in exc.errors[:20])
        raise click.ClickException(f"{file} is not valid, nothing was stored:\n{details}") from None
    click.echo(f"imported {file.name} for {user}: {summary(counts)}")
    click.echo(skipped_lines(skipped), nl=False)


@import_cli.command("health-auto-export")
@click.argument("user")
@click.argument("file", type=FILE)
def import_health_auto_export(user: str, file: Path) -> None:
    """Import FILE (the JSON Health Auto Export sends) for USER."""
    _run_in_transaction(user, file, "health_auto_export", HealthAutoExportPush)


@import_cli.command("json")
@click.argument("user")
@click.argument("file", type=FILE)
def import_json(user: str, file: Path) -> None:
    """Import FILE (a Respira JSON export, from any account) into USER's account."""
    _run_in_transaction(user, file, "json", RespiraExport)
