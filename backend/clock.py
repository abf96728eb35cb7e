"""The app's clock: `now()` is the current UTC time, unless a test has put its own clock in the app.

Lifetimes (dashboard sessions, auth-failure windows) read the time through here, so tests move time
forward by setting `app.extensions[CLOCK_KEY]` instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from flask import current_app, has_app_context

from backend.db import utcnow

CLOCK_KEY = "respira.clock"
Clock = Callable[[], datetime]


def now() -> datetime:
    if has_app_context():
        clock: Clock = current_app.extensions.get(CLOCK_KEY, utcnow)
        return clock()
    return utcnow()
