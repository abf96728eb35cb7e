"""Helpers for the dashboard tests: seeded workouts, passwords, logging in with the test client, and
reading the numbers back out of the SVG the pages draw."""

from __future__ import annotations

import random
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from typing import Any

from api_helpers import Api
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from backend.db import EXTENSION_KEY, Database
from backend.models import User

PASSWORD = "correct horse battery"
ACTIVITIES = ("running", "biking", "hiit")
# Per stage: typical RR (breaths/min) and the likely breath class, as in the paper's protocol.
STAGE_RR = {1: 14.0, 2: 36.0, 3: 31.0, 4: 21.0}
STAGE_CLASS = {1: "normal", 2: "heavy", 3: "heavy", 4: "normal"}
PULSE = {"before_1": 70, "before_2": 150, "before_3": 160, "after_3": 142, "before_4": 122, "after_4": 104}


def set_password(app: Flask, user_id: int, password: str = PASSWORD) -> None:
    """Give the user a password hashed with a cheap method (the hash names its method, so checking works
    as for real ones): the default scrypt costs 0.2 s per hash or check here, and tests log in often."""
    db: Database = app.extensions[EXTENSION_KEY]
    with db.session(write=True) as session, session.begin():
        user = session.get(User, user_id)
        assert user is not None
        user.password_hash = generate_password_hash(password, method="pbkdf2:sha256:1000")


def seeded_workout(
    rng: random.Random, started: datetime, activity: str, *, stages: int = 4
) -> dict[str, Any]:
    """A workout as the app uploads it: 1-minute stages of 6-s segments and the six pulse points."""
    fitness = rng.uniform(-2.0, 2.0)
    body_stages = []
    for n in range(1, stages + 1):
        stage_start = started + timedelta(minutes={1: 0, 2: 20, 3: 22, 4: 27}[n])
        segments = []
        for k in range(10):
            rr = max(4.0, STAGE_RR[n] + fitness + rng.gauss(0, 2.5))
            breath = STAGE_CLASS[n] if rng.random() > 0.2 else rng.choice(["none", "normal", "heavy"])
            probs = {"none": [0.8, 0.15, 0.05], "normal": [0.05, 0.85, 0.1], "heavy": [0.02, 0.13, 0.85]}[
                breath
            ]
            segments.append(
                {
                    "start_s": 6.0 * k,
                    "duration_s": 6.0,
                    "rr_bpm": round(rr, 2),
                    "respiration_count": round(rr / 10, 3),
                    "breath_class": breath,
                    "breath_probs": probs,
                    "noise_prob": round(rng.uniform(0.0, 0.6), 3),
                }
            )
        body_stages.append({"stage": n, "started_at": stage_start.isoformat(), "segments": segments})
    points = [p for p in PULSE if int(p[-1]) <= stages]
    pulse = [
        {
            "point": p,
            "bpm": round(PULSE[p] + 3 * fitness + rng.gauss(0, 4)),
            "measured_at": started.isoformat(),
        }
        for p in points
    ]
    return {
        "started_at": started.isoformat(),
        "activity": activity,
        "environment": rng.choice(["indoor", "outdoor"]),
        "model_version": "tclstm-2026.11",
        "stages": body_stages,
        "pulse": pulse,
    }


def seed_workouts(api: Api, count: int = 12, seed: int = 2026) -> list[str]:
    """`count` workouts, three a week from Monday 2026-10-05, over the real API; returns their ids."""
    rng = random.Random(seed)
    ids = []
    for i in range(count):
        zone = timezone(timedelta(hours=-7 if i % 2 else 1))
        started = datetime(2026, 10, 5, 7, 30, tzinfo=zone) + timedelta(days=7 * (i // 3) + 2 * (i % 3))
        # One workout stops after stage 3, so the stages' n differ and the weekly line has a gap to draw.
        body = seeded_workout(rng, started, ACTIVITIES[i % 3], stages=3 if i == 4 else 4)
        workout_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        response = api.put(f"/api/v1/workouts/{workout_id}", json=body)
        assert response.status_code == 201, response.json
        ids.append(workout_id)
    return ids


COOKIE = "respira_session"


def aged_cookie(app: Flask, value: str, age_s: int) -> str:
    """The same session re-signed `age_s` seconds ago, as if the browser had kept it that long.

    Only this serializer's signer is given the past clock (no global patch: a live server may be
    signing or checking other cookies in another thread meanwhile)."""
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    data = serializer.loads(value)
    signed_at = int(time.time()) - age_s

    class PastSigner(serializer.signer):  # type: ignore[name-defined,misc]
        def get_timestamp(self) -> int:
            return signed_at

    serializer.signer = PastSigner
    return serializer.dumps(data)


CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(client: FlaskClient, name: str, password: str = PASSWORD, **params: Any) -> Any:
    page = client.get("/login", query_string=params)
    token = csrf_token(page.get_data(as_text=True))
    return client.post(
        "/login", query_string=params, data={"username": name, "password": password, "csrf_token": token}
    )


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}))

    handle_startendtag = handle_starttag


def elements(html: str, *, tag: str | None = None, cls: str | None = None, **data: str) -> list[Element]:
    """Start tags of `html` with the tag, a class and `data-*` values given (data_kind="rr" -> data-kind)."""
    parser = _Collector()
    parser.feed(html)
    wanted = {"data-" + k[5:].replace("_", "-"): v for k, v in data.items() if k.startswith("data_")}
    return [
        e
        for e in parser.elements
        if (tag is None or e.tag == tag)
        and (cls is None or cls in e.attrs.get("class", "").split())
        and all(e.attrs.get(k) == v for k, v in wanted.items())
    ]


def px_to_value(px: float, plot: dict[str, str], axis: str = "y") -> float:
    """Invert a plot's linear axis (its data-{axis}-lo/hi/px-lo/px-hi attributes)."""
    lo, hi = float(plot[f"data-{axis}-lo"]), float(plot[f"data-{axis}-hi"])
    px_lo, px_hi = float(plot[f"data-{axis}-px-lo"]), float(plot[f"data-{axis}-px-hi"])
    return lo + (px - px_lo) * (hi - lo) / (px_hi - px_lo)
