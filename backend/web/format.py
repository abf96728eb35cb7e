"""Jinja filters: how numbers, times and vocabulary read on the dashboard."""

from __future__ import annotations

from datetime import datetime, timezone

from flask import Flask

from backend.web.charts import STAGE_NAMES, marker_path
from backend.web.forms import ACTIVITY_LABELS

MISSING = "—"


def local_time(value: str | datetime | None) -> str:
    """A workout's time on its own clock, with that clock's offset: 'Sat 21 Nov 2026, 07:30 (UTC−08:00)'."""
    if value is None:
        return MISSING
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    offset = moment.strftime("%z")
    zone = f"UTC{'−' if offset.startswith('-') else '+'}{offset[1:3]}:{offset[3:5]}" if offset else ""
    return f"{moment:%a} {moment.day} {moment:%b %Y, %H:%M}" + (f" ({zone})" if zone else "")


def utc_time(value: datetime | None) -> str:
    """Bookkeeping instants (token created, last used) in UTC, to the minute."""
    if value is None:
        return MISSING
    return f"{value.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"


def number(value: float | None, digits: int = 1) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    return MISSING if value is None else f"{value * 100:.0f} %"


def activity_label(value: str) -> str:
    return ACTIVITY_LABELS.get(value, value)


def pulse_point_label(point: str) -> str:
    """'before_3' -> 'Before stage 3'."""
    when, _, stage = point.partition("_")
    return f"{when.capitalize()} stage {stage}"


def stage_name(stage: int) -> str:
    return STAGE_NAMES.get(stage, "")


REASON_LABELS = {"no_breathing": "no breathing heard", "too_noisy": "too noisy to tell"}


def reason_label(reason: str | None) -> str:
    """Why a reading has no rate, in words: 'too_noisy' -> 'too noisy to tell'."""
    return MISSING if reason is None else REASON_LABELS.get(reason, reason.replace("_", " "))


def register_filters(app: Flask) -> None:
    for fn in (
        local_time,
        utc_time,
        number,
        percent,
        activity_label,
        pulse_point_label,
        stage_name,
        reason_label,
    ):
        app.add_template_filter(fn)
    app.add_template_global(marker_path)  # legend markers drawn like the charts' own
