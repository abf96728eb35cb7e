"""The corpus manifest: one CSV row per labelled segment, the format every corpus tool reads and writes.

A corpus is a folder holding ``manifest.csv`` and the audio it names. ``path`` is relative to the folder
(absolute paths are allowed for corpora that point at data elsewhere, such as ``../shared/data``), and a
row labels the part ``[start_s, end_s)`` of that file, so one long recording can carry many segments.

Columns (the first eleven are a contract other tools rely on; more may follow):
- ``path, start_s, end_s``: where the segment is.
- ``rr_bpm``: breaths per minute over the segment; ``respiration_count``: breath cycles heard in it
  (fractional where a cycle is cut by the segment's edges).
- ``breath_class``: none | normal | heavy (see :func:`breath_class_for`); ``noisy``: 0 | 1.
- ``stage``: workout stage 1-4, or empty when not recorded under the protocol.
- ``participant``, ``gender`` (female|male|other, or empty when unknown), ``environment`` (indoor|outdoor),
  ``source``.
- ``split``: train | val | test (by participant: nobody is in two splits), empty before splitting.
- ``snr_db``: SNR of added background noise, empty for none / unknown.
- ``recording``: an id shared by all segments of one recording (recording-level evaluation).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST_NAME = "manifest.csv"
BREATH_CLASSES = ("none", "normal", "heavy")
SPLITS = ("train", "val", "test")
ENVIRONMENTS = ("indoor", "outdoor")
GENDERS = ("female", "male", "other", "")

# The paper's classes: none (no breathing heard), normal 5-30, heavy above the threshold. The paper's
# body says > 30 breaths/min and its abstract > 25, hence a setting; 30 is the default.
HEAVY_THRESHOLD_BPM = 30.0
NONE_BELOW_BPM = 5.0


def breath_class_for(rr_bpm: float, heavy_threshold_bpm: float = HEAVY_THRESHOLD_BPM) -> str:
    """The 3-class breath label of a segment from its rate."""
    if rr_bpm < NONE_BELOW_BPM:
        return "none"
    return "heavy" if rr_bpm > heavy_threshold_bpm else "normal"


class ManifestError(ValueError):
    """A manifest is missing, has missing columns, or holds a value out of range (message says which)."""


@dataclasses.dataclass
class Segment:
    """One manifest row."""

    path: str
    start_s: float
    end_s: float
    rr_bpm: float
    respiration_count: float
    breath_class: str
    noisy: int = 0
    stage: int | None = None
    participant: str = ""
    gender: str = ""
    environment: str = "indoor"
    source: str = ""
    split: str = ""
    snr_db: float | None = None
    recording: str = ""

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def validate(self, where: str = "") -> None:
        prefix = f"{where}: " if where else ""
        if not self.path:
            raise ManifestError(f"{prefix}empty path")
        if not (math.isfinite(self.start_s) and math.isfinite(self.end_s)) or self.start_s < 0:
            raise ManifestError(f"{prefix}start_s/end_s must be finite and start_s >= 0")
        if self.end_s <= self.start_s:
            raise ManifestError(f"{prefix}end_s ({self.end_s}) must be after start_s ({self.start_s})")
        if not (0.0 <= self.rr_bpm <= 120.0):
            raise ManifestError(f"{prefix}rr_bpm {self.rr_bpm} outside 0-120")
        if not (math.isfinite(self.respiration_count) and self.respiration_count >= 0):
            raise ManifestError(f"{prefix}respiration_count {self.respiration_count} must be finite and >= 0")
        if self.breath_class not in BREATH_CLASSES:
            raise ManifestError(f"{prefix}breath_class {self.breath_class!r} not one of {BREATH_CLASSES}")
        if self.noisy not in (0, 1):
            raise ManifestError(f"{prefix}noisy must be 0 or 1, not {self.noisy!r}")
        if self.stage is not None and self.stage not in (1, 2, 3, 4):
            raise ManifestError(f"{prefix}stage {self.stage} outside 1-4")
        if self.gender not in GENDERS:
            raise ManifestError(f"{prefix}gender {self.gender!r} not one of {GENDERS}")
        if self.environment not in ENVIRONMENTS:
            raise ManifestError(f"{prefix}environment {self.environment!r} not one of {ENVIRONMENTS}")
        if self.split not in (*SPLITS, ""):
            raise ManifestError(f"{prefix}split {self.split!r} not one of {SPLITS}")


COLUMNS = [f.name for f in dataclasses.fields(Segment)]
REQUIRED_COLUMNS = COLUMNS[:12]


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        # 10 significant digits: millisecond boundaries survive in recordings up to ~100 days long, and
        # rates like 100/7 read back within 1e-9 (6 digits lost the milliseconds past 1000 s).
        return f"{value:.10g}"
    return str(value)


def write_manifest(segments: Iterable[Segment], corpus_dir: Path | str) -> Path:
    """Write ``corpus_dir/manifest.csv`` (validating every row first, so nothing half-valid is written)."""
    rows = list(segments)
    for i, seg in enumerate(rows):
        seg.validate(f"row {i + 2}")
    out = Path(corpus_dir) / MANIFEST_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for seg in rows:
            writer.writerow([_format(getattr(seg, c)) for c in COLUMNS])
    tmp.replace(out)
    return out


_REQUIRED = object()


def _field(
    raw: dict[str, str], column: str, parse: Callable[[str], Any] | None, where: str, default: Any = None
) -> Any:
    """One cell, parsed; an unparsable value names the row and the column (``parse`` None = keep text)."""
    text = (raw.get(column) or "").strip()
    if not text:
        if default is _REQUIRED:
            raise ManifestError(f"{where}: {column} is empty")
        return default
    try:
        return parse(text) if parse else text
    except ValueError as exc:
        raise ManifestError(f"{where}: {column} {text!r} is not a valid value ({exc})") from exc


def _parse_row(raw: dict[str, str], where: str) -> Segment:
    seg = Segment(
        path=_field(raw, "path", None, where, default=""),
        start_s=_field(raw, "start_s", float, where, default=_REQUIRED),
        end_s=_field(raw, "end_s", float, where, default=_REQUIRED),
        rr_bpm=_field(raw, "rr_bpm", float, where, default=_REQUIRED),
        respiration_count=_field(raw, "respiration_count", float, where, default=_REQUIRED),
        breath_class=_field(raw, "breath_class", None, where, default=""),
        noisy=_field(raw, "noisy", int, where, default=_REQUIRED),
        stage=_field(raw, "stage", int, where),
        participant=_field(raw, "participant", None, where, default=""),
        gender=_field(raw, "gender", None, where, default=""),
        environment=_field(raw, "environment", None, where, default="indoor"),
        source=_field(raw, "source", None, where, default=""),
        split=_field(raw, "split", None, where, default=""),
        snr_db=_field(raw, "snr_db", float, where),
        recording=_field(raw, "recording", None, where, default=""),
    )
    seg.validate(where)
    return seg


def read_manifest(corpus_dir: Path | str) -> list[Segment]:
    """Read and validate ``corpus_dir/manifest.csv`` (or a CSV path given directly)."""
    path = Path(corpus_dir)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest here (expected {MANIFEST_NAME} in the corpus folder)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: missing columns {', '.join(missing)}")
        return [_parse_row(raw, f"{path}:{i + 2}") for i, raw in enumerate(reader)]


def audio_path(corpus_dir: Path | str, segment: Segment) -> Path:
    """Absolute path of a segment's audio (manifest paths are relative to the corpus folder)."""
    p = Path(segment.path)
    return p if p.is_absolute() else Path(corpus_dir) / p


def random_segments(
    duration_s: float, rng: np.random.Generator, min_s: float = 4.0, max_s: float = 7.0
) -> list[tuple[float, float]]:
    """Cut ``[0, duration_s)`` into consecutive random segments of ``min_s``-``max_s`` seconds (the paper).

    Segments do not overlap; a remainder shorter than ``min_s`` at the end is dropped. A recording
    shorter than ``min_s`` gives no segment.
    """
    cuts: list[tuple[float, float]] = []
    start = 0.0
    while duration_s - start >= min_s:
        length = float(rng.uniform(min_s, max_s))
        end = min(start + length, duration_s)
        if end - start < min_s:
            break
        cuts.append((round(start, 3), round(end, 3)))
        start = end
    return cuts


def assign_splits(
    segments: list[Segment], seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> list[Segment]:
    """Set ``split`` by participant (nobody in two splits), reproducibly from ``seed``.

    Participants are shuffled with the seed and dealt to train/val/test by the fractions; with at least
    three participants every split gets at least one.
    """
    participants = sorted({s.participant for s in segments})
    rng = np.random.default_rng(seed)
    order = [participants[i] for i in rng.permutation(len(participants))]
    n = len(order)
    n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
    n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
    split_of = {}
    for i, p in enumerate(order):
        split_of[p] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    for seg in segments:
        seg.split = split_of[seg.participant]
    return segments
