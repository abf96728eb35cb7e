"""The import report: every record an import counted is stored, already stored, or skipped for a reason.

Importers describe each record they do not store with a `Skipped` (the record's type as the file names
it, a short reason shared by all records skipped alike, and the particulars of this one). `SkipTally`
adds them up by (type, reason) and keeps the particulars of the first few as the job's warnings. The
job stores the tally as `skipped`: `[{"type", "reason", "count"}]`, most frequent first, so a person sees
"HKQuantityTypeIdentifierStepCount: not imported by Respira, 48,210" next to what was stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_WARNINGS = 20  # skipped records are counted; the first few are described

NOT_IMPORTED = "not a record type Respira imports"
OUT_OF_RANGE = "value outside the plausible range"
NOT_A_NUMBER = "value is not a number"
WRONG_UNIT = "unit Respira cannot convert"
BAD_DATE = "unreadable date"
IMPLAUSIBLE_TIME = "time outside the plausible range"  # backend.domain.implausible_time
ENDS_BEFORE_START = "ends before it starts"

# What each stored kind is called in counts (`<key>_read`, `<key>_added`) and in the report.
STORED_KINDS = {
    "heart_rate": "Heart rate",
    "respiratory_rate": "Respiratory rate",
    "resting_heart_rate": "Resting heart rate",
    "hrv_sdnn": "Heart-rate variability (SDNN)",
    "vo2_max": "VO2 max",
    "walking_heart_rate_average": "Walking heart-rate average",
    "health_workouts": "Health-app workouts",
}


@dataclass(frozen=True, slots=True)
class Skipped:
    """A record that was not stored. `reason` describes this one record (it becomes a warning);
    `record_type` and `category` group it in the report (the category defaults to the reason)."""

    reason: str
    record_type: str = "record"
    category: str = ""
    warn: bool = True  # False for records skipped by type (they are counted, not described one by one)

    @property
    def key(self) -> tuple[str, str]:
        """What the report groups by: the type, and the category (else the reason)."""
        return self.record_type, self.category or self.reason


@dataclass
class SkipTally:
    """Skipped records by (type, reason), and the particulars of the first `MAX_WARNINGS`."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def add(self, skipped: Skipped, count: int = 1) -> None:
        key = skipped.key
        self.counts[key] = self.counts.get(key, 0) + count
        if skipped.warn and len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(skipped.reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_list(self) -> list[dict[str, Any]]:
        rows = [{"type": t, "reason": r, "count": n} for (t, r), n in self.counts.items()]
        return sorted(rows, key=lambda row: (-row["count"], row["type"], row["reason"]))


def stored_rows(counts: dict[str, int]) -> list[dict[str, Any]]:
    """Per stored kind present in `counts`: read, newly stored, and already stored before."""
    rows = []
    for key, label in STORED_KINDS.items():
        if f"{key}_read" not in counts:
            continue
        read, added = counts[f"{key}_read"], counts.get(f"{key}_added", 0)
        rows.append(
            {"kind": key, "label": label, "read": read, "added": added, "already_stored": read - added}
        )
    return rows
