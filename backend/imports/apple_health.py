"""Streaming reader of Apple Health exports (export.zip from the Health app, or its export.xml).

Exports run to several GB, so nothing is loaded whole: a zip member is decompressed as a stream and fed
to expat in 16 kB chunks; its callbacks keep the attributes of one record (or one workout and its few
children) at a time, and no text at all (Apple's export carries everything in attributes). Memory stays
at one record plus the caller's batch, whatever the file size.

Read: `Record` elements of HKQuantityTypeIdentifierHeartRate and HKQuantityTypeIdentifierRespiratoryRate
(attributes type, unit, value, sourceName, startDate, endDate), the fitness markers RestingHeartRate,
HeartRateVariabilitySDNN, VO2Max and WalkingHeartRateAverage, and `Workout` elements (type, start, end,
indoor flag, heart-rate statistics). Everything else is counted and reported as skipped, by type: other
records (steps, energy...), correlations, activity summaries and other top-level elements, and inside a
workout its nested activities, events, routes and statistics other than heart rate.
A record with an unusable value or date is skipped and reported, not fatal; malformed XML is fatal and
reported with its line and column.

Untrusted input (docs/security.md), every limit in `ExportLimits` (settings IMPORT_MAX_*):

- zip bombs: a member whose declared size passes `max_xml_bytes`, or that inflates more than
  `max_zip_ratio` times its compressed size, is refused before a byte is inflated; the stream also stops
  at the declared size (zipfile checks it, and so does `CountingReader`), so a lying header cannot
  inflate more;
- huge nodes: expat must buffer a whole start tag (or comment) before reporting it, and drops text (no
  handler is set for it); once it holds more than `max_node_bytes` of an unfinished token the import
  stops with an error, so one 300 MB attribute or comment cannot fill memory, nor can text;
- entities: a DTD that declares any entity is refused (no expansion bombs, no external entities);
  expat never fetches anything.
"""

from __future__ import annotations

import functools
import os
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any
from xml.parsers import expat

from backend.domain import implausible_time
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
    IMPLAUSIBLE_TIME,
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
CHUNK_BYTES = 16 * 1024  # as iterparse reads: bigger chunks only raise the peak
MiB = 1024 * 1024


@dataclass(frozen=True)
class ExportLimits:
    """What an upload may ask of the server (defaults: backend.imports.SETTINGS)."""

    max_xml_bytes: int = 16 * 1024 * MiB  # export.xml, inflated
    max_zip_ratio: float = 100.0  # inflated / compressed size of the export.xml member
    max_node_bytes: int = 1 * MiB  # one tag or comment (text is never kept)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ExportLimits:
        from backend.imports import setting

        return cls(
            max_xml_bytes=int(setting(config, "IMPORT_MAX_XML_BYTES")),
            max_zip_ratio=float(setting(config, "IMPORT_MAX_ZIP_RATIO")),
            max_node_bytes=int(setting(config, "IMPORT_MAX_XML_NODE_BYTES")),
        )


class ExportError(Exception):
    """The upload is not a usable Apple Health export.

    `kind`: "unsupported" (neither zip nor XML), "invalid" (a zip without export.xml, another XML
    document), "too_large" (past an `ExportLimits` limit) or "malformed" (broken XML; `line` and
    `column`, both from 1, say where).
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
    """Wraps a binary stream and counts the bytes read through it: the import's progress. Reading past
    `limit` bytes is an error (an inflating stream that does not stop where its header said)."""

    def __init__(self, raw: IO[bytes], limit: int | None = None) -> None:
        self.raw, self.bytes_read, self.limit = raw, 0, limit

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.bytes_read += len(data)
        if self.limit is not None and self.bytes_read > self.limit:
            raise ExportError(f"the export.xml is larger than the {self.limit:,} bytes it may inflate to")
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


def _check_member(member: zipfile.ZipInfo, limits: ExportLimits) -> None:
    """Refuse a zip bomb from its header, before inflating anything."""
    if member.file_size > limits.max_xml_bytes:
        raise ExportError(
            f"{member.filename} would inflate to {member.file_size:,} bytes; at most "
            f"{limits.max_xml_bytes:,} are accepted",
            "too_large",
        )
    ratio = member.file_size / max(member.compress_size, 1)
    if ratio > limits.max_zip_ratio:
        raise ExportError(
            f"{member.filename} would inflate {ratio:,.0f} times its compressed size (at most "
            f"{limits.max_zip_ratio:g} times is accepted): this is not an export from the Health app",
            "too_large",
        )


@contextmanager
def open_export(path: Path, limits: ExportLimits | None = None) -> Iterator[OpenedExport]:
    """Open an uploaded export.zip or export.xml for streaming; raises ExportError when it is neither,
    or when it would inflate past the limits."""
    limits = limits or ExportLimits()
    with open(path, "rb") as file:
        kind = sniff(file.read(64))
        file.seek(0)
        if kind == "xml":
            size = os.fstat(file.fileno()).st_size
            if size > limits.max_xml_bytes:
                raise ExportError(
                    f"the export.xml has {size:,} bytes; at most {limits.max_xml_bytes:,} are accepted",
                    "too_large",
                )
            yield OpenedExport(CountingReader(file), size, None)
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
            _check_member(member, limits)
            with archive.open(member) as raw:
                yield OpenedExport(CountingReader(raw, member.file_size), member.file_size, member.filename)


def check_export(path: Path, limits: ExportLimits | None = None) -> int:
    """Fail fast, before an import job is created, on an upload that cannot be an export (or would
    inflate too far). Returns the size of its XML, inflated: what decides between inline and a job."""
    with open_export(path, limits) as export:
        return export.size


@dataclass
class _OpenWorkout:
    """A workout being read: its attributes, the children it is read from, and its parts skipped."""

    attrs: dict[str, str]
    level: int  # elements open around it, the root included
    children: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


class _Collector:
    """expat callbacks: keep what the import needs of each element, count progress, enforce limits.

    Top-level elements and a workout's direct children are told apart by their level, which needs every
    end tag; so that costs no Python call per element, expat appends each end tag to `closed` (a C
    method) and the next start tag subtracts them. Only inside a workout is a Python end handler set.
    """

    def __init__(self, parser: Any, stats: ParseStats, limits: ExportLimits) -> None:
        self.parser, self.stats, self.limits = parser, stats, limits
        self.items: list[SampleIn | MarkerIn | HealthWorkoutIn | Skipped] = []
        self.open = 0  # elements open before the current start tag (the root included)
        self.closed: list[str] = []  # end tags since the last start tag
        self.workout: _OpenWorkout | None = None
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.closed.append
        # No CharacterDataHandler: expat then drops text as it goes, so none accumulates.
        parser.EntityDeclHandler = self.entity

    def entity(self, *_args: Any) -> None:
        raise ExportError("the XML declares entities, which Apple Health exports never do; refused")

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        if self.closed:
            self.open -= len(self.closed)
            self.closed.clear()
        level = self.open  # 0: the root; 1: a top-level element
        self.open += 1
        if level == 0:
            if tag != ROOT_TAG:
                raise ExportError(
                    f"this XML is not an Apple Health export: its root element is <{tag}>, not <{ROOT_TAG}>"
                )
            return
        if tag == "Record":
            self.stats.records += 1
            self.items.append(_record_item(attrs))
        elif tag == "Workout":
            self.stats.records += 1
            self.workout = _OpenWorkout(attrs, level)
            self.parser.EndElementHandler = self.end
        elif self.workout is not None and level == self.workout.level + 1:
            self._workout_child(self.workout, tag, attrs)
        elif level == 1 and tag not in NOT_RECORDS:
            self.stats.records += 1
            self.items.append(_not_imported(attrs.get("type") or tag))

    def _workout_child(self, workout: _OpenWorkout, tag: str, attrs: dict[str, str]) -> None:
        """A direct child of a workout: read (metadata, heart-rate statistics) or counted as skipped."""
        if tag == "MetadataEntry" or (tag == "WorkoutStatistics" and attrs.get("type") == HK_HEART_RATE):
            workout.children.append((tag, attrs))
        elif (reason := WORKOUT_PARTS_SKIPPED.get(tag)) is not None:
            record_type = tag
            if tag == "WorkoutStatistics":
                record_type += f" {attrs.get('type', '')}".rstrip()
            workout.skipped.append(_workout_part(record_type, reason))

    def end(self, tag: str) -> None:
        self.closed.append(tag)
        workout = self.workout
        if workout is not None and self.open - len(self.closed) == workout.level:  # the workout closed
            self.items.append(_workout(workout.attrs, workout.children))
            self.items.extend(workout.skipped)
            self.stats.records += len(workout.skipped)
            self.workout = None
            self.parser.EndElementHandler = self.closed.append


def _node_too_large(limits: ExportLimits, line: int) -> ExportError:
    return ExportError(
        f"a single tag or comment runs past {limits.max_node_bytes:,} bytes (near line {line}); "
        "Apple Health records are a few hundred bytes",
        "too_large",
    )


def parse_export(
    stream: CountingReader, stats: ParseStats | None = None, limits: ExportLimits | None = None
) -> Iterator[SampleIn | MarkerIn | HealthWorkoutIn | Skipped]:
    """Yield the samples, fitness markers and workouts of an export, in file order, and a `Skipped` for
    every other record: each `Record` and `Workout` (at any depth), each other top-level element but
    ExportDate and Me, and each direct child of a workout that is not read (`stats.records` counts all)."""
    stats = stats if stats is not None else ParseStats()
    limits = limits or ExportLimits()
    parser = expat.ParserCreate()
    parser.buffer_text = False  # text comes in pieces as it arrives: counted, never accumulated
    collector = _Collector(parser, stats, limits)
    fed = 0
    try:
        # Chunks smaller than a node may be, so that an overlong one is noticed while it is still open.
        while chunk := stream.read(min(CHUNK_BYTES, max(1024, limits.max_node_bytes // 2))):
            parser.Parse(chunk, False)
            fed += len(chunk)
            yield from collector.items
            collector.items.clear()
            # Between calls, CurrentByteIndex is where expat's unfinished token starts: what it buffers.
            if fed - parser.CurrentByteIndex > limits.max_node_bytes:
                raise _node_too_large(limits, parser.CurrentLineNumber)
        parser.Parse(b"", True)
        yield from collector.items
        return
    except expat.ExpatError as exc:
        error = _malformed(exc)
    except ExportError as exc:
        error = exc
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        error = ExportError(f"the zip file is damaged: {exc}")
    yield from collector.items  # the records read whole before the error are good
    raise error


def _malformed(exc: expat.ExpatError) -> ExportError:
    line, column = exc.lineno, exc.offset
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


def _record_item(elem: dict[str, str]) -> SampleIn | MarkerIn | Skipped:
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


@functools.lru_cache(maxsize=256)
def _workout_part(record_type: str, reason: str) -> Skipped:
    return Skipped(reason, record_type, reason, warn=False)


def _times(elem: dict[str, str], where: str, record_type: str) -> tuple[datetime, datetime] | Skipped:
    start_text = elem.get("startDate", "")
    try:
        started_at = parse_health_datetime(start_text)
        ended_at = parse_health_datetime(elem.get("endDate") or start_text)
    except ValueError as exc:
        return Skipped(f"{where}: {exc}", record_type, BAD_DATE)
    if problem := implausible_time(started_at) or implausible_time(ended_at):
        return Skipped(f"{where}: {problem}", record_type, IMPLAUSIBLE_TIME)
    if ended_at < started_at:
        return Skipped(f"{where}: it ends before it starts", record_type, ENDS_BEFORE_START)
    return started_at, ended_at


def _value(
    elem: dict[str, str], units: dict[str, float], where: str, record_type: str, expected: str
) -> float | Skipped:
    unit = elem.get("unit", "")
    factor = units.get(unit, units.get(unit.lower().replace(" ", "")))
    if factor is None:
        return Skipped(f"{where}: unit {elem.get('unit')!r} is not {expected}", record_type, WRONG_UNIT)
    try:
        return _number(elem.get("value")) * factor
    except ValueError:
        return Skipped(f"{where}: value {elem.get('value')!r} is not a number", record_type, NOT_A_NUMBER)


def _record(elem: dict[str, str], kind: str) -> SampleIn | Skipped:
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


def _marker(elem: dict[str, str], kind: str) -> MarkerIn | Skipped:
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


def _workout(elem: dict[str, str], children: list[tuple[str, dict[str, str]]]) -> HealthWorkoutIn | Skipped:
    start_text = elem.get("startDate", "")
    activity = elem.get("workoutActivityType", "").removeprefix("HKWorkoutActivityType") or "Other"
    where = f"{activity} workout of {start_text or '?'}"
    try:
        started_at = parse_health_datetime(start_text)
        ended_at = parse_health_datetime(elem.get("endDate", ""))
    except ValueError as exc:
        return Skipped(f"{where}: {exc}", "Workout", BAD_DATE)
    if problem := implausible_time(started_at) or implausible_time(ended_at):
        return Skipped(f"{where}: {problem}", "Workout", IMPLAUSIBLE_TIME)
    if ended_at < started_at:
        return Skipped(f"{where}: it ends before it starts", "Workout", ENDS_BEFORE_START)
    indoor: bool | None = None
    hr: dict[str, float | None] = {"average": None, "minimum": None, "maximum": None}
    for tag, child in children:
        if tag == "MetadataEntry" and child.get("key") == "HKIndoorWorkout":
            indoor = child.get("value", "").lower() in ("1", "true", "yes")
        elif tag == "WorkoutStatistics" and child.get("type") == HK_HEART_RATE:
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
