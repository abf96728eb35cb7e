"""Fixtures for the interop tests: small hand-written Apple Health exports, zips, uploads, row counts."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from typing import Any

from api_helpers import Api
from flask import Flask
from sqlalchemy import func, select

from backend.db import EXTENSION_KEY, Database

WATCH = "Alice’s Apple Watch"
PHONE = "Alice’s iPhone"
HEADER = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE HealthData [
<!-- HealthKit Export Version: 14 -->
<!ELEMENT HealthData (ExportDate,Me,(Record|Correlation|Workout|ActivitySummary)*)>
<!ATTLIST HealthData
  locale CDATA #REQUIRED
>
]>
<HealthData locale="en_US">
 <ExportDate value="2026-11-30 09:00:00 -0800"/>
 <Me HKCharacteristicTypeIdentifierDateOfBirth="1990-04-12" \
HKCharacteristicTypeIdentifierBiologicalSex="HKBiologicalSexFemale"/>
"""
FOOTER = "</HealthData>\n"


def record(
    type_: str,
    start: str,
    value: str,
    *,
    unit: str = "count/min",
    end: str | None = None,
    source: str = WATCH,
    metadata: bool = True,
) -> str:
    attrs = (
        f'type="HKQuantityTypeIdentifier{type_}" sourceName="{source}" sourceVersion="10.2" '
        f'device="&lt;&lt;HKDevice: 0x600003a2c0a0&gt;, name:Apple Watch, manufacturer:Apple Inc.&gt;" '
        f'unit="{unit}" creationDate="{start}" startDate="{start}" endDate="{end or start}" value="{value}"'
    )
    if not metadata:
        return f" <Record {attrs}/>\n"
    return (
        f" <Record {attrs}>\n"
        '  <MetadataEntry key="HKMetadataKeyHeartRateMotionContext" value="1"/>\n'
        " </Record>\n"
    )


def heart_rate(start: str, bpm: float | str, source: str = WATCH) -> str:
    return record("HeartRate", start, str(bpm), source=source)


def respiratory_rate(start: str, end: str, rate: float | str, unit: str = "count/min") -> str:
    return record("RespiratoryRate", start, str(rate), unit=unit, end=end, metadata=False)


def hk_workout(start: str, end: str, *, activity: str = "Running", indoor: bool = False) -> str:
    return (
        f' <Workout workoutActivityType="HKWorkoutActivityType{activity}" duration="17.5" durationUnit="min" '
        f'sourceName="{WATCH}" sourceVersion="10.2" creationDate="{end}" '
        f'startDate="{start}" endDate="{end}">\n'
        f'  <MetadataEntry key="HKIndoorWorkout" value="{int(indoor)}"/>\n'
        f'  <WorkoutEvent type="HKWorkoutEventTypePause" date="{start}"/>\n'
        f'  <WorkoutStatistics type="HKQuantityTypeIdentifierHeartRate" startDate="{start}" endDate="{end}" '
        'average="148.5" minimum="96" maximum="171" unit="count/min"/>\n'
        f'  <WorkoutRoute sourceName="{WATCH}" creationDate="{end}" startDate="{start}" endDate="{end}">\n'
        '   <FileReference path="/workout-routes/route_2026-11-21_7.35am.gpx"/>\n'
        "  </WorkoutRoute>\n"
        " </Workout>\n"
    )


def export_xml(elements: Iterable[str]) -> bytes:
    return (HEADER + "".join(elements) + FOOTER).encode()


def export_zip(xml: bytes, member: str = "apple_health_export/export.xml") -> bytes:
    """An export.zip laid out as the Health app writes it (CDA document and routes beside export.xml)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("apple_health_export/export_cda.xml", "<ClinicalDocument/>")
        archive.writestr(member, xml)
        archive.writestr("apple_health_export/workout-routes/route_2026-11-21_7.35am.gpx", "<gpx/>")
    return buffer.getvalue()


def upload(api: Api, data: bytes, filename: str = "export.xml", field: str = "file") -> Any:
    return api.post(
        "/api/v1/imports/apple-health",
        data={field: (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
    )


def db_of(app: Flask) -> Database:
    return app.extensions[EXTENSION_KEY]


def count(app: Flask, model: Any, *where: Any) -> int:
    with db_of(app).session() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0
