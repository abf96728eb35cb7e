"""Streaming reader of Apple Health exports (export.zip from the Health app, or its export.xml).

Exports run to several GB, so nothing is loaded whole: a zip member is decompressed as a stream, and
`xml.etree.ElementTree.iterparse` builds one element at a time. After each element ends the root is
cleared, which drops every finished element (`elem.clear()` alone would leave one empty element per
record hanging off the root: hundreds of MB for a large export). Memory stays at one record plus the
caller's batch, whatever the file size.

Read: `Record` elements of HKQuantityTypeIdentifierHeartRate and HKQuantityTypeIdentifierRespiratoryRate
(attributes type, unit, value, sourceName, startDate, endDate), the fitness markers RestingHeartRate,
HeartRateVariabilitySDNN, VO2Max and WalkingHeartRateAverage, and `Workout` elements (type, start, end,
indoor flag, heart-rate statistics). Everything else is counted and reported as skipped, by type: other
records (steps, energy...), correlations, activity summaries and other top-level elements, and inside a
workout its nested activities, events, routes and statistics other than heart rate.
A record with an unusable value or date is skipped and reported, not fatal; malformed XML is fatal and
reported with its line and column.

Untrusted input: expat (>= 2.4.1, bundled with supported Pythons) refuses entity-expansion bombs, and
ElementTree never fetches external entities or DTDs.
"""

from __future__ import annotations

import functools
import os
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO
from xml.etree import ElementTree as ET
from xml.parsers import expat

from backend.imports.dates import parse_health_datetime
from backend.imports.records import (
    HEART_RATE,
    HRV_SDNN,
    RESPIRATORY_RATE,
    RESTING_HEART_RATE,
    VO2_MAX,
    WALKING_HEART_RATE,
    HealthWorkoutIn,
    MarkerIn,
    SampleIn,
    clean_source,
    local_day,
    marker_problem,
    sample_problem,
)
from backend.imports.report import (
    BAD_DATE,
    ENDS_BEFORE_START,
    NOT_A_NUMBER,
    NOT_IMPORTED,
    OUT_OF_RANGE,
    WRONG_UNIT,
    Skipped,
)

HK_HEART_RATE = "HKQuantityTypeIdentifierHeartRate"
HK_RESPIRATORY_RATE = "HKQuantityTypeIdentifierRespiratoryRate"
RECORD_KINDS = {HK_HEART_RATE: HEART_RATE, HK_RESPIRATORY_RATE: RESPIRATORY_RATE}
MARKER_KINDS = {
    "HKQuantityTypeIdentifierRestingHeartRate": RESTING_HEART_RATE,
    "HKQuantityTypeIdentifierHeartRateVariabilitySDNN": HRV_SDNN,
    "HKQuantityTypeIdentifierVO2Max": VO2_MAX,
    "HKQuantityTypeIdentifierWalkingHeartRateAverage": WALKING_HEART_RATE,
}
PER_MINUTE = {"count/min": 1.0, "count/s": 60.0, "count/h": 1 / 60}  # unit -> factor to "per minute"
# VO2 max as the Health app writes it ("mL/min·kg") and as other apps spell the same unit.
VO2_UNITS = dict.fromkeys(
    ("ml/min·kg", "ml/kg·min", "ml/(kg·min)", "ml/kg/min", "ml/(kg*min)", "ml/min*kg", "ml/kg*min"), 1.0
)
MARKER_UNITS = {  # lower-cased unit -> factor to the marker's stored unit
    RESTING_HEART_RATE: PER_MINUTE,
    WALKING_HEART_RATE: PER_MINUTE,
    HRV_SDNN: {"ms": 1.0, "s": 1000.0},
    VO2_MAX: VO2_UNITS,
}
# Top-level elements that describe the export, not records: neither imported nor skipped.
NOT_RECORDS = {"ExportDate", "Me"}
WORKOUT_PARTS_SKIPPED = {
    "WorkoutActivity": "nested workout activities are not imported (the workout's own span and heart "
    "rate are)",
    "WorkoutEvent": "workout events (pauses, laps, segments) are not imported",
    "WorkoutRoute": "routes (GPS tracks) are not imported",
    "WorkoutStatistics": "workout statistics other than heart rate are not imported",
}
ROOT_TAG = "HealthData"
DEFAULT_SOURCE = "Apple Health"
ZIP_MAGIC = b"PK\x03\x04"


class ExportError(Exception):
    """The upload is not a usable Apple Health export.

    `kind`: "unsupported" (neither zip nor XML), "invalid" (a zip without export.xml, another XML
    document) or "malformed" (broken XML; `line` and `column`, both from 1, say where).
    """

    def __init__(
        self, message: str, kind: str = "invalid", line: int | None = None, column: int | None = None
    ):
        super().__init__(message)
        self.message, self.kind, self.line, self.column = message, kind, line, column


@dataclass
class ParseStats:
    records: int = 0  # records counted, of every type (imported or skipped): see parse_export


class CountingReader:
    """Wraps a binary stream and counts the bytes read through it: the import's progress."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.bytes_read = raw, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.bytes_read += len(data)
        return data


@dataclass
class OpenedExport:
    stream: CountingReader
    size: int  # bytes of XML (uncompressed)
    member: str | None  # the zip member read, or None for a bare export.xml


def sniff(head: bytes) -> str | None:
    """'zip', 'xml' or None, from the first bytes of a file."""
    if head.startswith(ZIP_MAGIC):
        return "zip"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return "xml" if text.startswith(b"<") else None


def choose_member(members: list[zipfile.ZipInfo]) -> zipfile.ZipInfo | None:
    """The export.xml of an export.zip (`apple_health_export/export.xml`; any folder, any case).

    Failing that (localised exports), the largest XML file that is neither the clinical CDA document
    (export_cda.xml) nor inside workout-routes/ or electrocardiograms/.
    """
    named = [m for m in members if PurePosixPath(m.filename).name.lower() == "export.xml"]
    if named:
        return min(named, key=lambda m: len(m.filename))
    candidates = [
        m
        for m in members
        if m.filename.lower().endswith(".xml")
        and "cda" not in PurePosixPath(m.filename).name.lower()
        and not {"workout-routes", "electrocardiograms"} & set(PurePosixPath(m.filename).parts)
    ]
    return max(candidates, key=lambda m: m.file_size, default=None)


def _not_an_export() -> ExportError:
    return ExportError(
        "the file is neither a zip nor an XML file; upload export.zip from the Health app "
        "(Profile > Export All Health Data) or the export.xml inside it",
        "unsupported",
    )


@contextmanager
def open_export(path: Path) -> Iterator[OpenedExport]:
    """Open an uploaded export.zip or export.xml for streaming; raises ExportError when it is neither."""
    with open(path, "rb") as file:
        kind = sniff(file.read(64))
        file.seek(0)
        if kind == "xml":
            yield OpenedExport(CountingReader(file), os.fstat(file.fileno()).st_size, None)
            return
        if kind != "zip":
            raise _not_an_export()
        try:
            archive = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, EOFError) as exc:
            raise ExportError(f"the zip file cannot be read: {exc}") from None
        with archive:
            member = choose_member(archive.infolist())
            if member is None:
                names = ", ".join(archive.namelist()[:5]) or "nothing"
                raise ExportError(f"the zip holds no export.xml (it holds {names})")
            with archive.open(member) as raw:
                yield OpenedExport(CountingReader(raw), member.file_size, member.filename)


def check_export(path: Path) -> None:
    """Fail fast, before an import job is created, on an upload that cannot be an export."""
    with open_export(path):
        pass


def parse_export(
    stream: CountingReader, stats: ParseStats | None = None
) -> Iterator[SampleIn | MarkerIn | HealthWorkoutIn | Skipped]:
    """Yield the samples, fitness markers and workouts of an export, in file order, and a `Skipped` for
    every other record: each `Record` and `Workout` (at any depth), each other top-level element but
    ExportDate and Me, and each direct child of a workout that is not read (`stats.records` counts all)."""
    stats = stats if stats is not None else ParseStats()
    root: ET.Element | None = None
    depth = 0  # open elements below the root
    try:
        for event, elem in ET.iterparse(stream, events=("start", "end")):
            if root is None:  # the first event: the document element starts
                root = elem
                if elem.tag != ROOT_TAG:
                    raise ExportError(
                        f"this XML is not an Apple Health export: its root element is <{elem.tag}>, "
                        f"not <{ROOT_TAG}>"
                    )
                continue
            if event == "start":
                depth += 1
                continue
            level, depth = depth, depth - 1
            tag = elem.tag
            if tag == "Record":
                stats.records += 1
                yield _record_item(elem)
            elif tag == "Workout":
                stats.records += 1
                yield _workout(elem)
                for part in _workout_parts_skipped(elem):
                    stats.records += 1
                    yield part
            elif level == 1 and tag not in NOT_RECORDS:
                stats.records += 1
                yield _not_imported(elem.get("type") or str(tag))
            # Finished elements hang off the root: drop them (an open element lives on in the parser).
            root.clear()
    except ET.ParseError as exc:
        raise _malformed(exc) from None
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise ExportError(f"the zip file is damaged: {exc}") from None


def _record_item(elem: ET.Element) -> SampleIn | MarkerIn | Skipped:
    record_type = elem.get("type", "")
    if (kind := RECORD_KINDS.get(record_type)) is not None:
        return _record(elem, kind)
    if (marker := MARKER_KINDS.get(record_type)) is not None:
        return _marker(elem, marker)
    return _not_imported(record_type or "Record")


@functools.lru_cache(maxsize=1024)
def _not_imported(record_type: str) -> Skipped:
    """The skip of a record type Respira does not read: one shared value per type (most of an export)."""
    return Skipped(NOT_IMPORTED, record_type, NOT_IMPORTED, warn=False)


def _workout_parts_skipped(workout: ET.Element) -> Iterator[Skipped]:
    for child in workout:
        reason = WORKOUT_PARTS_SKIPPED.get(str(child.tag))
        if reason is None or (child.tag == "WorkoutStatistics" and child.get("type") == HK_HEART_RATE):
            continue
        record_type = str(child.tag)
        if child.tag == "WorkoutStatistics":
            record_type += f" {child.get('type', '')}".rstrip()
        yield _workout_part(record_type, reason)


@functools.lru_cache(maxsize=256)
def _workout_part(record_type: str, reason: str) -> Skipped:
    return Skipped(reason, record_type, reason, warn=False)


def _malformed(exc: ET.ParseError) -> ExportError:
    line, column = exc.position
    reason = expat.errors.messages.get(exc.code, str(exc))
    if exc.code == expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS] or reason == "unclosed token":
        reason += " (the file ends too early: was the upload cut short?)"
    return ExportError(
        f"malformed XML at line {line}, column {column + 1}: {reason}", "malformed", line, column + 1
    )


def _number(text: str | None) -> float:
    if text is None:
        raise ValueError("missing")
    return float(text)


def _times(elem: ET.Element, where: str, record_type: str) -> tuple[datetime, datetime] | Skipped:
    start_text = elem.get("startDate", "")
    try:
        started_at = parse_health_datetime(start_text)
        ended_at = parse_health_datetime(elem.get("endDate") or start_text)
    except ValueError as exc:
        return Skipped(f"{where}: {exc}", record_type, BAD_DATE)
    if ended_at < started_at:
        return Skipped(f"{where}: it ends before it starts", record_type, ENDS_BEFORE_START)
    return started_at, ended_at


def _value(
    elem: ET.Element, units: dict[str, float], where: str, record_type: str, expected: str
) -> float | Skipped:
    unit = elem.get("unit", "")
    factor = units.get(unit, units.get(unit.lower().replace(" ", "")))
    if factor is None:
        return Skipped(f"{where}: unit {elem.get('unit')!r} is not {expected}", record_type, WRONG_UNIT)
    try:
        return _number(elem.get("value")) * factor
    except ValueError:
        return Skipped(f"{where}: value {elem.get('value')!r} is not a number", record_type, NOT_A_NUMBER)


def _record(elem: ET.Element, kind: str) -> SampleIn | Skipped:
    record_type = elem.get("type", "")
    where = f"{record_type.removeprefix('HKQuantityTypeIdentifier')} record of {elem.get('startDate') or '?'}"
    bpm = _value(elem, PER_MINUTE, where, record_type, "a rate per minute")
    if isinstance(bpm, Skipped):
        return bpm
    times = _times(elem, where, record_type)
    if isinstance(times, Skipped):
        return times
    if problem := sample_problem(kind, bpm):
        return Skipped(f"{where}: {problem}", record_type, NOT_A_NUMBER if bpm != bpm else OUT_OF_RANGE)
    source = clean_source(elem.get("sourceName"), DEFAULT_SOURCE)
    return SampleIn(kind, times[0], times[1], bpm, source)


def _marker(elem: ET.Element, kind: str) -> MarkerIn | Skipped:
    record_type = elem.get("type", "")
    where = f"{record_type.removeprefix('HKQuantityTypeIdentifier')} record of {elem.get('startDate') or '?'}"
    value = _value(elem, MARKER_UNITS[kind], where, record_type, f"a unit of {kind.replace('_', ' ')}")
    if isinstance(value, Skipped):
        return value
    times = _times(elem, where, record_type)
    if isinstance(times, Skipped):
        return times
    if problem := marker_problem(kind, value):
        return Skipped(f"{where}: {problem}", record_type, NOT_A_NUMBER if value != value else OUT_OF_RANGE)
    source = clean_source(elem.get("sourceName"), DEFAULT_SOURCE)
    return MarkerIn(kind, times[0], times[1], value, source, local_day(times[0]))


def _workout(elem: ET.Element) -> HealthWorkoutIn | Skipped:
    start_text = elem.get("startDate", "")
    activity = elem.get("workoutActivityType", "").removeprefix("HKWorkoutActivityType") or "Other"
    where = f"{activity} workout of {start_text or '?'}"
    try:
        started_at = parse_health_datetime(start_text)
        ended_at = parse_health_datetime(elem.get("endDate", ""))
    except ValueError as exc:
        return Skipped(f"{where}: {exc}", "Workout", BAD_DATE)
    if ended_at < started_at:
        return Skipped(f"{where}: it ends before it starts", "Workout", ENDS_BEFORE_START)
    indoor: bool | None = None
    hr: dict[str, float | None] = {"average": None, "minimum": None, "maximum": None}
    for child in elem:
        if child.tag == "MetadataEntry" and child.get("key") == "HKIndoorWorkout":
            indoor = child.get("value", "").lower() in ("1", "true", "yes")
        elif child.tag == "WorkoutStatistics" and child.get("type") == HK_HEART_RATE:
            factor = PER_MINUTE.get(child.get("unit", ""), 1.0)
            for stat in hr:
                try:
                    hr[stat] = _number(child.get(stat)) * factor
                except ValueError:
                    hr[stat] = None
    return HealthWorkoutIn(
        source=clean_source(elem.get("sourceName"), DEFAULT_SOURCE),
        activity_type=activity[:100],
        started_at=started_at,
        ended_at=ended_at,
        indoor=indoor,
        hr_avg_bpm=hr["average"],
        hr_min_bpm=hr["minimum"],
        hr_max_bpm=hr["maximum"],
    )
