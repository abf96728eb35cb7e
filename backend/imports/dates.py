"""The date formats of Apple Health and Health Auto Export, parsed to aware datetimes.

Apple Health writes `2024-01-15 23:00:00 -0600`. Health Auto Export writes the same (`yyyy-MM-dd HH:mm:ss Z`)
or, on phones set to a 12-hour clock, `2024-09-28 4:51:59 pm +1000` (iOS may put a narrow no-break space
before "pm"). ISO 8601 with an offset is accepted too. A time without an offset is refused: the instant
would be a guess.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_PATTERN = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6})\d*)?)?"
    r"\s*([AaPp]\.?[Mm]\.?)?\s*(Z|[+-]\d{2}:?\d{2})"
)
_SPACES = str.maketrans({"\u202f": " ", "\u00a0": " ", "\u2009": " "})
EXPECTED = "a date like '2024-01-15 23:00:00 -0600' or '2024-09-28 4:51:59 pm +1000'"


def parse_health_datetime(text: str) -> datetime:
    """Parse one timestamp; raises ValueError saying what was expected."""
    try:
        # Fast path for the 24-hour form (millions of records in an export): C code in Python 3.11+.
        moment = datetime.fromisoformat(text)
    except (ValueError, TypeError):
        return _parse_slow(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset; expected {EXPECTED}")
    return moment


def _parse_slow(text: object) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"expected {EXPECTED}, got {type(text).__name__}")
    match = _PATTERN.fullmatch(text.translate(_SPACES).strip())
    if match is None:
        raise ValueError(f"{text!r} is not {EXPECTED}")
    year, month, day, hour, minute, second, fraction, meridiem, offset = match.groups()
    hour_i = int(hour)
    if meridiem is not None:
        if not 1 <= hour_i <= 12:
            raise ValueError(f"{text!r}: hour {hour_i} does not fit a 12-hour clock")
        hour_i = hour_i % 12 + (12 if meridiem[0] in "pP" else 0)
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            hour_i,
            int(minute),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
            tzinfo=_offset(offset),
        )
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date: {exc}") from None


def _offset(text: str) -> timezone:
    if text == "Z":
        return timezone.utc
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:])
    if minutes >= 24 * 60:
        raise ValueError(f"UTC offset {text} is out of range")
    return timezone(sign * timedelta(minutes=minutes))
