"""A synthetic but realistic Apple Health export.xml, for tests and the import benchmark (test scaffolding).

Shaped like a real export from the Health app: the DTD header, ExportDate and Me, then records of many
types from an iPhone and an Apple Watch (heart rate with motion-context metadata and the Watch's long
`device` attribute, heart-rate variability with instantaneous beats, steps, energy, distance,
respiratory rate during sleep, blood-pressure correlations holding nested records), workouts with
metadata, events, statistics and route references, and a daily activity summary. The clock moves from
UTC-6 to UTC-5 in March as daylight saving time does. Seeded, so a given call always writes the same
file; `ExportSummary` says what a correct import must find.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO

CST, CDT = timezone(timedelta(hours=-6)), timezone(timedelta(hours=-5))
DST_STARTS = date(2024, 3, 10)
IMPORTED_TYPES = {  # of the types written here
    "HeartRate",
    "RespiratoryRate",
    "HeartRateVariabilitySDNN",
    "RestingHeartRate",
    "WalkingHeartRateAverage",
    "VO2Max",
}
WATCH = "Alice’s Apple Watch"
PHONE = "Alice’s iPhone"
WATCH_DEVICE = (
    "&lt;&lt;HKDevice: 0x600003a2c0a0&gt;, name:Apple Watch, manufacturer:Apple Inc., model:Watch, "
    "hardware:Watch6,2, software:10.2&gt;"
)
PHONE_DEVICE = (
    "&lt;&lt;HKDevice: 0x600003a2d130&gt;, name:iPhone, manufacturer:Apple Inc., model:iPhone, "
    "hardware:iPhone15,2, software:17.2&gt;"
)
HEADER = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE HealthData [
<!-- HealthKit Export Version: 14 -->
<!ELEMENT HealthData (ExportDate,Me,(Record|Correlation|Workout|ActivitySummary|ClinicalRecord)*)>
<!ATTLIST HealthData
  locale CDATA #REQUIRED
>
<!ELEMENT ExportDate EMPTY>
<!ATTLIST ExportDate
  value CDATA #REQUIRED
>
<!ELEMENT Me EMPTY>
<!ATTLIST Me
  HKCharacteristicTypeIdentifierDateOfBirth         CDATA #REQUIRED
  HKCharacteristicTypeIdentifierBiologicalSex       CDATA #REQUIRED
  HKCharacteristicTypeIdentifierBloodType           CDATA #REQUIRED
  HKCharacteristicTypeIdentifierFitzpatrickSkinType CDATA #REQUIRED
>
<!ELEMENT Record ((MetadataEntry|HeartRateVariabilityMetadataList)*)>
<!ATTLIST Record
  type          CDATA #REQUIRED
  unit          CDATA #IMPLIED
  value         CDATA #IMPLIED
  sourceName    CDATA #REQUIRED
  sourceVersion CDATA #IMPLIED
  device        CDATA #IMPLIED
  creationDate  CDATA #IMPLIED
  startDate     CDATA #REQUIRED
  endDate       CDATA #REQUIRED
>
<!ELEMENT Workout ((MetadataEntry|WorkoutEvent|WorkoutStatistics|WorkoutRoute)*)>
<!ATTLIST Workout
  workoutActivityType   CDATA #REQUIRED
  duration              CDATA #IMPLIED
  durationUnit          CDATA #IMPLIED
  sourceName            CDATA #REQUIRED
  sourceVersion         CDATA #IMPLIED
  device                CDATA #IMPLIED
  creationDate          CDATA #IMPLIED
  startDate             CDATA #REQUIRED
  endDate               CDATA #REQUIRED
>
]>
<HealthData locale="en_US">
 <ExportDate value="{export_date}"/>
 <Me HKCharacteristicTypeIdentifierDateOfBirth="1990-04-12" \
HKCharacteristicTypeIdentifierBiologicalSex="HKBiologicalSexFemale" \
HKCharacteristicTypeIdentifierBloodType="HKBloodTypeNotSet" \
HKCharacteristicTypeIdentifierFitzpatrickSkinType="HKFitzpatrickSkinTypeNotSet"/>
"""


@dataclass
class ExportSummary:
    """What the file holds: a correct import stores exactly these heart-rate, RR and workout counts."""

    heart_rate: int = 0
    respiratory_rate: int = 0
    hrv_sdnn: int = 0
    resting_heart_rate: int = 0
    walking_heart_rate_average: int = 0
    vo2_max: int = 0
    workouts: int = 0
    skipped: int = 0  # records of types Respira does not import, and workouts' events, routes, statistics
    records: int = 0  # every record counted: imported kinds + skipped
    days: int = 0
    bytes: int = 0


def local_time(day: date, seconds: float) -> datetime:
    tz = CDT if day >= DST_STARTS else CST
    return datetime(day.year, day.month, day.day, tzinfo=tz) + timedelta(seconds=seconds)


def fmt(moment: datetime) -> str:
    """Apple's format: `2024-01-15 23:00:00 -0600`."""
    return moment.strftime("%Y-%m-%d %H:%M:%S %z")


class _Day:
    """Writes one day of data; records are appended to `lines` and counted in `summary`."""

    def __init__(self, day: date, rng: random.Random, summary: ExportSummary, workout: bool) -> None:
        self.day, self.rng, self.summary, self.lines = day, rng, summary, []
        self.workout_span = (7.5 * 3600, 7.5 * 3600 + rng.randint(28, 42) * 60) if workout else None

    def record(
        self,
        type_: str,
        unit: str,
        value: str,
        start_s: float,
        duration_s: float = 0.0,
        phone: bool = False,
        children: str = "",
    ) -> None:
        start = local_time(self.day, start_s)
        source, device, version = (PHONE, PHONE_DEVICE, "17.2") if phone else (WATCH, WATCH_DEVICE, "10.2")
        attrs = (
            f'type="HKQuantityTypeIdentifier{type_}" sourceName="{source}" sourceVersion="{version}" '
            f'device="{device}" unit="{unit}" '
            f'creationDate="{fmt(start + timedelta(seconds=duration_s + 7))}" '
            f'startDate="{fmt(start)}" endDate="{fmt(start + timedelta(seconds=duration_s))}" value="{value}"'
        )
        self.lines.append(
            f" <Record {attrs}>\n{children} </Record>\n" if children else f" <Record {attrs}/>\n"
        )
        self.summary.records += 1
        if type_ not in IMPORTED_TYPES:
            self.summary.skipped += 1

    def in_workout(self, t: float) -> bool:
        # Whole seconds are written: keep a margin so a resting reading never lands on a workout second.
        return self.workout_span is not None and self.workout_span[0] - 60 <= t <= self.workout_span[1] + 610

    def heart_rate(self) -> None:
        rng, bpm = self.rng, 62.0
        t = rng.uniform(0, 300)
        motion = '  <MetadataEntry key="HKMetadataKeyHeartRateMotionContext" value="{}"/>\n'
        while t < 86_400:
            if not self.in_workout(t):
                bpm = min(max(bpm + rng.gauss(0, 3), 48), 110)
                self.record(
                    "HeartRate", "count/min", f"{bpm:.0f}", t, children=motion.format(rng.choice("01"))
                )
                self.summary.heart_rate += 1
            t += rng.uniform(240, 480)
        if self.workout_span is not None:  # every 5 s while the workout runs, then the recovery
            start_s, end_s = self.workout_span
            t, bpm = start_s, 95.0
            while t <= end_s + 600:
                target = 165.0 if t < end_s else 100.0
                bpm += (target - bpm) * 0.03 + rng.gauss(0, 1.5)
                self.record("HeartRate", "count/min", f"{bpm:.0f}", t, children=motion.format(2))
                self.summary.heart_rate += 1
                t += 5

    def respiratory_rate(self) -> None:
        t = 0.0
        while t < 6 * 3600:  # while asleep, after midnight
            self.record("RespiratoryRate", "count/min", f"{self.rng.uniform(12, 17.5):.1f}", t, 150)
            self.summary.respiratory_rate += 1
            t += self.rng.uniform(240, 420)

    def activity(self) -> None:
        rng = self.rng
        t = 6.5 * 3600
        while t < 22 * 3600:
            self.record("ActiveEnergyBurned", "Cal", f"{rng.uniform(0.05, 1.2):.3f}", t, 60)
            if rng.random() < 0.4:
                self.record("BasalEnergyBurned", "Cal", f"{rng.uniform(0.9, 1.3):.3f}", t, 60)
            if rng.random() < 0.25:
                steps = rng.randint(8, 140)
                self.record("StepCount", "count", str(steps), t, 60, phone=True)
                self.record("DistanceWalkingRunning", "km", f"{steps * 0.00072:.5f}", t, 60, phone=True)
            t += rng.uniform(90, 150)

    def hrv(self) -> None:
        for hour in (2, 9, 15, 21):
            t = hour * 3600 + self.rng.uniform(0, 1800)
            beats = "".join(
                f'   <InstantaneousBeatsPerMinute bpm="{self.rng.randint(55, 75)}" '
                f'time="{hour % 12 or 12}:{k:02d}:{self.rng.randint(0, 59):02d}.{k:02d} '
                f'{"AM" if hour < 12 else "PM"}"/>\n'
                for k in range(8)
            )
            children = f"  <HeartRateVariabilityMetadataList>\n{beats}  </HeartRateVariabilityMetadataList>\n"
            self.record(
                "HeartRateVariabilitySDNN", "ms", f"{self.rng.uniform(25, 70):.4f}", t, 60, children=children
            )
            self.summary.hrv_sdnn += 1

    def fitness_markers(self) -> None:
        """The Watch's daily resting and walking heart rate, and a VO2 max estimate after an outdoor run."""
        day_s = 86_400 - 1
        self.record("RestingHeartRate", "count/min", str(self.rng.randint(52, 60)), 0, day_s)
        self.summary.resting_heart_rate += 1
        self.record("WalkingHeartRateAverage", "count/min", str(self.rng.randint(92, 108)), 0, day_s)
        self.summary.walking_heart_rate_average += 1
        if self.workout_span is not None:
            self.record("VO2Max", "mL/min·kg", f"{self.rng.uniform(42, 47):.2f}", self.workout_span[1] + 60)
            self.summary.vo2_max += 1

    def blood_pressure(self) -> None:
        start = fmt(local_time(self.day, 8 * 3600))
        self.lines.append(
            f' <Correlation type="HKCorrelationTypeIdentifierBloodPressure" sourceName="Health" '
            f'sourceVersion="17.2" creationDate="{start}" startDate="{start}" endDate="{start}">\n'
        )
        for kind, value in (("Diastolic", 78), ("Systolic", 121)):
            self.lines.append(
                f'  <Record type="HKQuantityTypeIdentifierBloodPressure{kind}" sourceName="Health" '
                f'sourceVersion="17.2" unit="mmHg" creationDate="{start}" startDate="{start}" '
                f'endDate="{start}" value="{value}"/>\n'
            )
            self.summary.records += 1
            self.summary.skipped += 1
        self.lines.append(" </Correlation>\n")
        self.summary.records += 1  # the correlation itself
        self.summary.skipped += 1

    def workout(self) -> None:
        assert self.workout_span is not None
        start_s, end_s = self.workout_span
        start, end = local_time(self.day, start_s), local_time(self.day, end_s)
        s, e = fmt(start), fmt(end)
        minutes = (end_s - start_s) / 60
        km = minutes * 0.17
        self.lines.append(
            f' <Workout workoutActivityType="HKWorkoutActivityTypeRunning" duration="{minutes:.4f}" '
            f'durationUnit="min" sourceName="{WATCH}" sourceVersion="10.2" device="{WATCH_DEVICE}" '
            f'creationDate="{fmt(end + timedelta(seconds=12))}" startDate="{s}" endDate="{e}">\n'
            f'  <MetadataEntry key="HKIndoorWorkout" value="0"/>\n'
            f'  <MetadataEntry key="HKTimeZone" value="America/Chicago"/>\n'
            f'  <MetadataEntry key="HKAverageMETs" value="9.8 kcal/hr·kg"/>\n'
            f'  <WorkoutEvent type="HKWorkoutEventTypeSegment" date="{s}" duration="10" '
            f'durationUnit="min"/>\n'
            f'  <WorkoutEvent type="HKWorkoutEventTypePause" date="{fmt(start + timedelta(minutes=12))}"/>\n'
            f'  <WorkoutEvent type="HKWorkoutEventTypeResume" date="{fmt(start + timedelta(minutes=13))}"/>\n'
            f'  <WorkoutStatistics type="HKQuantityTypeIdentifierActiveEnergyBurned" startDate="{s}" '
            f'endDate="{e}" sum="{minutes * 11.2:.3f}" unit="Cal"/>\n'
            f'  <WorkoutStatistics type="HKQuantityTypeIdentifierDistanceWalkingRunning" startDate="{s}" '
            f'endDate="{e}" sum="{km:.4f}" unit="km"/>\n'
            f'  <WorkoutStatistics type="HKQuantityTypeIdentifierHeartRate" startDate="{s}" endDate="{e}" '
            f'average="148.2" minimum="95" maximum="171" unit="count/min"/>\n'
            f'  <WorkoutRoute sourceName="{WATCH}" sourceVersion="10.2" creationDate="{e}" startDate="{s}" '
            f'endDate="{e}">\n'
            f'   <MetadataEntry key="HKMetadataKeySyncVersion" value="2"/>\n'
            f'   <FileReference path="/workout-routes/route_{self.day.isoformat()}_7.30am.gpx"/>\n'
            f"  </WorkoutRoute>\n"
            f" </Workout>\n"
        )
        self.summary.records += 1
        self.summary.workouts += 1
        parts_skipped = 3 + 2 + 1  # events, statistics other than heart rate, the route
        self.summary.records += parts_skipped
        self.summary.skipped += parts_skipped

    def summary_line(self) -> None:
        self.lines.append(
            f' <ActivitySummary dateComponents="{self.day.isoformat()}" activeEnergyBurned="'
            f'{self.rng.uniform(300, 700):.3f}" activeEnergyBurnedGoal="500" activeEnergyBurnedUnit="Cal" '
            f'appleMoveTime="0" appleMoveTimeGoal="0" appleExerciseTime="{self.rng.randint(5, 60)}" '
            f'appleExerciseTimeGoal="30" appleStandHours="{self.rng.randint(6, 14)}" '
            f'appleStandHoursGoal="12"/>\n'
        )
        self.summary.records += 1
        self.summary.skipped += 1


def day_chunks(first_day: date, rng: random.Random, summary: ExportSummary) -> Iterator[str]:
    day = first_day
    while True:
        writer = _Day(day, rng, summary, workout=day.toordinal() % 2 == 0)
        writer.heart_rate()
        writer.respiratory_rate()
        writer.activity()
        writer.hrv()
        writer.fitness_markers()
        if day.weekday() == 6:
            writer.blood_pressure()
        if writer.workout_span is not None:
            writer.workout()
        writer.summary_line()
        summary.days += 1
        yield "".join(writer.lines)
        day += timedelta(days=1)


def write_export(
    out: TextIO,
    *,
    days: int | None = None,
    target_bytes: int | None = None,
    seed: int = 0,
    first_day: date = date(2024, 1, 1),
) -> ExportSummary:
    """Write an export.xml of `days` days, or of at least `target_bytes` bytes (UTF-8), to `out`."""
    if (days is None) == (target_bytes is None):
        raise ValueError("give exactly one of days and target_bytes")
    rng, summary = random.Random(seed), ExportSummary()
    export_date = fmt(local_time(first_day, 0) + timedelta(days=days or 3650))
    text = HEADER.replace("{export_date}", export_date)
    out.write(text)
    summary.bytes = len(text.encode())
    for chunk in day_chunks(first_day, rng, summary):
        out.write(chunk)
        summary.bytes += len(chunk.encode())
        if (days is not None and summary.days >= days) or (target_bytes and summary.bytes >= target_bytes):
            break
    out.write("</HealthData>\n")
    summary.bytes += len("</HealthData>\n")
    return summary


def write_export_file(path: Path, **kwargs: object) -> ExportSummary:
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        return write_export(out, **kwargs)  # type: ignore[arg-type]
