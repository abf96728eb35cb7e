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


# ---- an export of every shape a recent Health app writes (issue 16) -------------------------------------


def day(clock: str, date: str = "2026-11-23") -> str:
    return f"{date} {clock} -0800"


def marker_records() -> list[str]:
    """The four fitness markers as the Health app writes them (VO2 max in "mL/min·kg", HRV with beats)."""
    beats = "".join(
        f'   <InstantaneousBeatsPerMinute bpm="{bpm}" time="7:41:{10 + k:02d}.{k}2 AM"/>\n'
        for k, bpm in enumerate((61, 64, 59, 66))
    )
    hrv = record("HeartRateVariabilitySDNN", day("07:40:13"), "48.25", unit="ms", end=day("07:41:13"))
    hrv = hrv.replace(
        "  <MetadataEntry",
        f"  <HeartRateVariabilityMetadataList>\n{beats}  </HeartRateVariabilityMetadataList>\n"
        "  <MetadataEntry",
    )
    return [
        record("RestingHeartRate", day("00:00:00"), "54", end=day("23:59:59"), metadata=False),
        record("RestingHeartRate", day("00:00:00", "2026-11-16"), "52", end=day("23:59:59", "2026-11-16")),
        hrv,
        record("VO2Max", day("18:02:00", "2026-11-24"), "44.7", unit="mL/min·kg", metadata=False),
        record("WalkingHeartRateAverage", day("00:00:00"), "98", end=day("23:59:59"), metadata=False),
    ]


def full_shape_export() -> bytes:
    """Every kind of element of a real export (iOS 17 shape): imported records and markers, records and
    elements Respira skips, a workout with nested activities, events, statistics and a route, and two
    unusable records. `FULL_SHAPE_SKIPPED` and `FULL_SHAPE_COUNTS` are what an import must report."""
    start, end = day("17:00:00", "2026-11-24"), day("17:45:00", "2026-11-24")
    mid = day("17:20:00", "2026-11-24")
    workout = (
        f' <Workout workoutActivityType="HKWorkoutActivityTypeRunning" duration="45" durationUnit="min" '
        f'sourceName="{WATCH}" sourceVersion="10.2" creationDate="{end}" startDate="{start}" '
        f'endDate="{end}">\n'
        '  <MetadataEntry key="HKIndoorWorkout" value="0"/>\n'
        '  <MetadataEntry key="HKTimeZone" value="America/Los_Angeles"/>\n'
        f'  <WorkoutEvent type="HKWorkoutEventTypePause" date="{mid}"/>\n'
        f'  <WorkoutEvent type="HKWorkoutEventTypeResume" date="{day("17:21:00", "2026-11-24")}"/>\n'
        f'  <WorkoutActivity uuid="7B1C9E2D-3F4A-4B5C-8D6E-9F0A1B2C3D4E" startDate="{start}" '
        f'endDate="{end}" duration="45" durationUnit="min">\n'
        f'   <WorkoutEvent type="HKWorkoutEventTypeSegment" date="{start}" duration="10" '
        'durationUnit="min"/>\n'
        f'   <WorkoutStatistics type="HKQuantityTypeIdentifierHeartRate" startDate="{start}" endDate="{end}" '
        'average="141" minimum="98" maximum="168" unit="count/min"/>\n'
        "  </WorkoutActivity>\n"
        f'  <WorkoutStatistics type="HKQuantityTypeIdentifierActiveEnergyBurned" startDate="{start}" '
        f'endDate="{end}" sum="421.7" unit="Cal"/>\n'
        f'  <WorkoutStatistics type="HKQuantityTypeIdentifierDistanceWalkingRunning" startDate="{start}" '
        f'endDate="{end}" sum="7.82" unit="km"/>\n'
        f'  <WorkoutStatistics type="HKQuantityTypeIdentifierHeartRate" startDate="{start}" endDate="{end}" '
        'average="141" minimum="98" maximum="168" unit="count/min"/>\n'
        f'  <WorkoutRoute sourceName="{WATCH}" sourceVersion="10.2" creationDate="{end}" startDate="{start}" '
        f'endDate="{end}">\n'
        '   <FileReference path="/workout-routes/route_2026-11-24_5.00pm.gpx"/>\n'
        "  </WorkoutRoute>\n"
        " </Workout>\n"
    )
    pressure = day("08:00:00")
    correlation = (
        f' <Correlation type="HKCorrelationTypeIdentifierBloodPressure" sourceName="Health" '
        f'sourceVersion="17.2" creationDate="{pressure}" startDate="{pressure}" endDate="{pressure}">\n'
        + record("BloodPressureSystolic", pressure, "121", unit="mmHg", source="Health", metadata=False)
        + record("BloodPressureDiastolic", pressure, "78", unit="mmHg", source="Health", metadata=False)
        + " </Correlation>\n"
    )
    sleep = (
        f' <Record type="HKCategoryTypeIdentifierSleepAnalysis" sourceName="{WATCH}" sourceVersion="10.2" '
        f'creationDate="{day("06:40:00")}" startDate="{day("01:10:00")}" endDate="{day("02:30:00")}" '
        'value="HKCategoryValueSleepAnalysisAsleepCore"/>\n'
    )
    stand = sleep.replace("SleepAnalysis", "AppleStandHour").replace(
        "HKCategoryValueSleepAnalysisAsleepCore", "HKCategoryValueAppleStandHourStood"
    )
    summary = (
        ' <ActivitySummary dateComponents="{d}" activeEnergyBurned="512.3" activeEnergyBurnedGoal="500" '
        'activeEnergyBurnedUnit="Cal" appleExerciseTime="41" appleExerciseTimeGoal="30" appleStandHours="11" '
        'appleStandHoursGoal="12"/>\n'
    )
    clinical = (
        ' <ClinicalRecord type="HKClinicalTypeIdentifierLabResultRecord" identifier="a1b2" '
        'sourceName="Clinic" sourceURL="https://fhir.example/Observation/1" fhirVersion="4.0.1" '
        'receivedDate="2026-11-20 09:00:00 -0800" '
        'resourceFilePath="/clinical-records/Observation-a1b2.json"/>\n'
    )
    return export_xml(
        [
            heart_rate(day("17:10:00", "2026-11-24"), 148),
            heart_rate(day("21:00:00", "2026-11-24"), 63, source=PHONE),
            respiratory_rate(day("02:00:00"), day("02:02:30"), 14.5),
            *marker_records(),
            record("RestingHeartRate", day("00:00:00", "2026-11-25"), "0", metadata=False),  # out of range
            record("VO2Max", day("18:02:00", "2026-11-25"), "44", unit="count", metadata=False),  # unit
            record("StepCount", day("09:00:00"), "120", unit="count", source=PHONE, metadata=False),
            record("StepCount", day("09:10:00"), "80", unit="count", source=PHONE, metadata=False),
            record("ActiveEnergyBurned", day("09:00:00"), "3.2", unit="Cal", metadata=False),
            sleep,
            stand,
            correlation,
            workout,
            summary.format(d="2026-11-23"),
            summary.format(d="2026-11-24"),
            clinical,
        ]
    )


NOT_IMPORTED = "not a record type Respira imports"
FULL_SHAPE_SKIPPED = [
    {"type": "ActivitySummary", "reason": NOT_IMPORTED, "count": 2},
    {"type": "HKQuantityTypeIdentifierStepCount", "reason": NOT_IMPORTED, "count": 2},
    {
        "type": "WorkoutEvent",
        "reason": "workout events (pauses, laps, segments) are not imported",
        "count": 2,
    },
    {"type": "HKCategoryTypeIdentifierAppleStandHour", "reason": NOT_IMPORTED, "count": 1},
    {"type": "HKCategoryTypeIdentifierSleepAnalysis", "reason": NOT_IMPORTED, "count": 1},
    {"type": "HKClinicalTypeIdentifierLabResultRecord", "reason": NOT_IMPORTED, "count": 1},
    {"type": "HKCorrelationTypeIdentifierBloodPressure", "reason": NOT_IMPORTED, "count": 1},
    {"type": "HKQuantityTypeIdentifierActiveEnergyBurned", "reason": NOT_IMPORTED, "count": 1},
    {"type": "HKQuantityTypeIdentifierBloodPressureDiastolic", "reason": NOT_IMPORTED, "count": 1},
    {"type": "HKQuantityTypeIdentifierBloodPressureSystolic", "reason": NOT_IMPORTED, "count": 1},
    {
        "type": "HKQuantityTypeIdentifierRestingHeartRate",
        "reason": "value outside the plausible range",
        "count": 1,
    },
    {"type": "HKQuantityTypeIdentifierVO2Max", "reason": "unit Respira cannot convert", "count": 1},
    {
        "type": "WorkoutActivity",
        "reason": "nested workout activities are not imported (the workout's own span and heart rate are)",
        "count": 1,
    },
    {"type": "WorkoutRoute", "reason": "routes (GPS tracks) are not imported", "count": 1},
    {
        "type": "WorkoutStatistics HKQuantityTypeIdentifierActiveEnergyBurned",
        "reason": "workout statistics other than heart rate are not imported",
        "count": 1,
    },
    {
        "type": "WorkoutStatistics HKQuantityTypeIdentifierDistanceWalkingRunning",
        "reason": "workout statistics other than heart rate are not imported",
        "count": 1,
    },
]
FULL_SHAPE_COUNTS = {
    "heart_rate_read": 2,
    "respiratory_rate_read": 1,
    "resting_heart_rate_read": 2,
    "hrv_sdnn_read": 1,
    "vo2_max_read": 1,
    "walking_heart_rate_average_read": 1,
    "health_workouts_read": 1,
    "skipped": 19,
    "records_read": 28,  # 9 stored + 19 skipped
}
