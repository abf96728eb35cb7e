"""The iOS app, simulated: synthetic people breathe through several weeks of workouts, each stage's audio
streams chunk by chunk through the exported ``.mlpackage`` (the numpy interpreter stands in for Core ML on
the phone) exactly as docs/ios.md tells the app to, the readings become stage segments, Apple Watch pulse
readings are added, and each workout is uploaded over the REST API with the person's device token.

It lives in the ``demo`` package, beside the step runner and outside the wheel (pyproject.toml installs
only ``training``, ``coreml`` and ``backend``): it is a client of all three (it streams through a
package *and* talks HTTP to the service), which none of the shipped packages may be: ``backend`` must
import neither ``training`` nor ``coreml``, and ``coreml`` should not grow an HTTP client. Tests and
``scripts/demo`` import it from the source tree.

The readings are computed by :func:`stream_stage`: one stream through the package per stage, whose
outputs are the rolling estimator's answers (the estimator is in the graph). Every reading is
uploaded as the package answered it (issue 19): a rate with its ``rr_confidence``, or ``rr_bpm`` null
with the ``reason`` ("no_breathing", "too_noisy") and the confidence it had; the backend decides what
counts toward the trends (docs/api.md, "Confidence").

Some workouts are recorded in real noise (:data:`REAL_NOISE_STAGES`): when ``../shared/data/noise`` is
there, each stage of every third workout is mixed with a stretch of one of its recordings
(``training.real_noise``, the part the model never trained or was calibrated on), an exercise bike in
a gym loud over the breath during exercise, so some readings come back "too noisy" and some stages
"not enough breathing heard" on the dashboard.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# The interpreter multiplies tiny matrices per 100 ms chunk: BLAS threads only add contention (20x
# slower on a busy machine). Set before numpy is imported here or in the worker processes.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Stage-typical rates (breaths/min) and pulse (beats/min) of an untrained person in week 0; every week of
# training lowers resting values and speeds recovery a little (see fitness()).
STAGE_RR = {1: 16.0, 2: 44.0, 3: 38.0, 4: 24.0}
PULSE = {"before_1": 74, "before_2": 162, "before_3": 160, "after_3": 138, "before_4": 128, "after_4": 108}
ACTIVITIES = ("running", "biking", "hiit", "incline_walking")


def fitness(user_index: int, week: int, workout: int) -> tuple[dict[int, float], dict[str, int]]:
    """Stage rates and protocol pulse for a person's workout: fitter every week, a little noise."""
    import numpy as np

    rng = np.random.default_rng([user_index, week, workout])
    gain = week * (0.6 + 0.2 * user_index)
    rates = {
        1: STAGE_RR[1] - 0.35 * gain + user_index,
        2: STAGE_RR[2] - 1.0 * gain - 2 * user_index,
        3: STAGE_RR[3] - 1.4 * gain - 2 * user_index,
        4: STAGE_RR[4] - 1.2 * gain,
    }
    ranges = {1: (10, 18), 2: (25, 50), 3: (25, 45), 4: (15, 28)}
    rates = {k: float(np.clip(v + rng.normal(0, 0.8), *ranges[k])) for k, v in rates.items()}
    drop = {
        "before_1": 0.6,
        "before_2": 1.0,
        "before_3": 1.0,
        "after_3": 2.0,
        "before_4": 2.2,
        "after_4": 2.5,
    }
    pulse = {
        p: round(float(v - drop[p] * gain - 3 * user_index + rng.normal(0, 2))) for p, v in PULSE.items()
    }
    return rates, pulse


_PACKAGE = None


def _load_package(path: str) -> None:
    global _PACKAGE
    from coreml.interpreter import load_package

    _PACKAGE = load_package(path)


READING_HOP_S = 5.0  # a reading every 5 s once the rolling window is full, as the estimator's timeline


# Real-noise workouts: per stage, the recording mixed in and the SNR (dB, breath over noise) it is mixed at.
# Stage 2 is near the end of the exercise: the bike right beside the microphone, louder than the breath.
# Measured with the shipped model, 60 s stages, the quick plan's two real-noise workouts: at -10 dB the
# bike drowned one person's breathing (7 of 7 windows "no breathing") and gave the other half the rate
# breathed (21 for 42.6, confidence 0.42-0.50, one window "too noisy": the estimator's octave error,
# which its confidence does not catch); at -5 dB right after exercise one person had 3 of 7 windows
# "too noisy"; with the kitchen at -5 dB one person had 2 windows "too noisy" and 2 at half the rate,
# the stage median still within 0.5 breaths/min; the tap at +5 dB let the rate through (within 1).
REAL_NOISE_STAGES = {
    1: ("running_tap", 5.0),
    2: ("exercise_bike", -10.0),
    3: ("exercise_bike", -5.0),
    4: ("doing_the_dishes", -5.0),
}
REAL_NOISE_EVERY = 3  # every third workout of the plan (by person, week and workout) is recorded in it
_NOISE_BANK = None


def real_noise_dir() -> str | None:
    """``../shared/data/noise`` when every recording REAL_NOISE_STAGES names is there, else None (the
    demo then records every workout in synthetic noise only)."""
    from training.real_noise import DEFAULT_NOISE_DIR

    names = {name for name, _ in REAL_NOISE_STAGES.values()}
    present = all((DEFAULT_NOISE_DIR / f"{name}.flac").is_file() for name in names)
    return str(DEFAULT_NOISE_DIR) if present else None


def _noise_bank(noise_dir: str):
    """The test part of the recorded noises (``training.real_noise``), loaded once per worker process."""
    global _NOISE_BANK
    if _NOISE_BANK is None:
        from training.real_noise import load_noise_bank

        _NOISE_BANK = load_noise_bank("test", noise_dir)
    return _NOISE_BANK


def in_real_noise(audio, clean, stage: int, noise_dir: str, rng):
    """``audio`` with a stretch of the stage's real recording (REAL_NOISE_STAGES) at its SNR against
    ``clean`` (the breath and room floor), spliced where the recording's part is shorter than the stage
    (``training.real_noise.splice``: a loop would repeat at a breathing-like period)."""
    from training.augment import limit_peak, scale_noise

    name, snr_db = REAL_NOISE_STAGES[stage]
    _, noise = _noise_bank(noise_dir).draw(len(audio), rng, name)
    return limit_peak(audio + scale_noise(clean, noise, snr_db)), f"{name} at {snr_db:+g} dB"


def stream_stage(audio, chunk: int = 1600) -> list[dict]:
    """One stream through the package for the whole stage (docs/ios.md), read as the app reads it:
    every 5 s once the rolling window is full (or at the end of a stage shorter than the window), the
    package's own answer for the window that ends there. No app-side arithmetic: the rate, its
    confidence, the reason when there is none, the breathing class and the noise probability are the
    package's outputs (the rolling estimator is in the graph, issue 13), and the window's breath count
    is the difference of the package's ``respiration_count`` across the window.

    Every window gives a reading, as the package answered it: a rate and its confidence, or a null rate
    with the reason and the confidence it had (issue 19). A reading without a rate has no breath count
    (none the estimator would stand behind) and a class only when it is "none".
    """
    import numpy as np

    from coreml.streaming import BREATHING_CLASSES, REASONS
    from coreml.verify import PackageStreamer
    from training.frontend import SAMPLE_RATE_HZ

    meta = _PACKAGE.user_defined_metadata
    window_s = float(meta["respira.window_s"])
    chunk_s = chunk / SAMPLE_RATE_HZ
    stream = PackageStreamer(_PACKAGE)
    chunks = len(audio) // chunk
    duration_s = chunks * chunk_s
    counts = [0.0]  # respiration_count after each chunk (0 before the first)
    readings = []
    for index in range(chunks):
        out = {k: np.ravel(v) for k, v in stream.push(audio[index * chunk : (index + 1) * chunk]).items()}
        counts.append(float(out["respiration_count"][0]))
        end_s = round((index + 1) * chunk_s, 3)
        full = end_s + 1e-6 >= min(window_s, duration_s)
        on_hop = abs(end_s / READING_HOP_S - round(end_s / READING_HOP_S)) < 1e-6
        if not full or not (on_hop or index == chunks - 1):
            continue
        start_s = round(max(0.0, end_s - window_s), 3)
        reason = REASONS[round(float(out["rr_reason"][0]))]
        if reason == "warming_up":
            continue
        has_rate = reason == "rate"
        breathing = BREATHING_CLASSES[round(float(out["breathing"][0]))]
        first_chunk = round(start_s / chunk_s)
        readings.append(
            {
                "start_s": start_s,
                "duration_s": round(end_s - start_s, 3),
                "rr_bpm": round(float(out["rr_bpm"][0]), 2) if has_rate else None,
                "rr_confidence": round(float(out["rr_confidence"][0]), 3),
                **({} if has_rate else {"reason": reason}),
                "respiration_count": round(counts[-1] - counts[first_chunk], 2) if has_rate else None,
                "breath_class": breathing if breathing != "unknown" else None,
                "noise_prob": round(float(out["noise_prob"][0]), 4),
            }
        )
    return readings


def simulate_workout(job: dict) -> dict:
    """Audio for the four stages of one workout, streamed through the package -> the upload payload."""
    import numpy as np

    from training.synth import make_participant, synth_recording

    rates, pulse = fitness(job["user_index"], job["week"], job["workout"])
    participant = make_participant(job["user"], seed=1000 + job["user_index"])
    rng = np.random.default_rng([job["user_index"], job["week"], job["workout"], 1])
    tz = dt.timezone(dt.timedelta(hours=job["utc_offset_h"]))
    day = dt.date.fromisoformat(job["first_day"]) + dt.timedelta(weeks=job["week"], days=3 * job["workout"])
    start = dt.datetime.combine(day, dt.time(7, 30), tzinfo=tz)
    # stage start times: before; near the end of the exercise; right after; cooling down
    offsets_min = {1: 0.0, 2: 20.0, 3: 21.5, 4: 26.0}
    environment = job["environment"]
    noise_dir = job.get("real_noise_dir")
    stages, heard_in = [], {}
    for stage in (1, 2, 3, 4):
        noise_kind = None if rng.random() < 0.5 else ("fan" if environment == "indoor" else "wind")
        if noise_dir:  # recorded in real noise instead (module doc)
            noise_kind = None
        rec = synth_recording(
            participant,
            stage,
            job["stage_s"],
            rng,
            environment=environment,
            noise_kind=noise_kind,
            snr_db=float(rng.uniform(15, 35)) if noise_kind else None,
            rate_bpm=rates[stage],
        )
        audio = rec.audio
        if noise_dir:
            audio, heard_in[stage] = in_real_noise(rec.audio, rec.clean, stage, noise_dir, rng)
        stages.append(
            {
                "stage": stage,
                "started_at": (start + dt.timedelta(minutes=offsets_min[stage])).isoformat(),
                "duration_s": job["stage_s"],
                "segments": stream_stage(audio),
            }
        )
    times = {
        "before_1": 0.0,
        "before_2": 19.5,
        "before_3": 21.0,
        "after_3": 21.5 + job["stage_s"] / 60,
        "before_4": 25.5,
        "after_4": 26.0 + job["stage_s"] / 60,
    }
    return {
        "id": job["id"],
        "user": job["user"],
        "true_rr": rates,
        "real_noise": heard_in,
        "body": {
            "started_at": start.isoformat(),
            "activity": job["activity"],
            "environment": environment,
            "model_version": job["model_version"],
            "stages": stages,
            "pulse": [
                {
                    "point": p,
                    "bpm": pulse[p],
                    "measured_at": (start + dt.timedelta(minutes=times[p])).isoformat(),
                }
                for p in PULSE
            ],
        },
    }


class UploadRefused(RuntimeError):
    """The service refused a workout (the message holds its status and problem body)."""


def upload(base_url: str, token: str, workout_id: str, body: dict) -> int:
    """PUT one workout as the app does (idempotent by id); returns the HTTP status."""
    request = urllib.request.Request(
        f"{base_url}/api/v1/workouts/{workout_id}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        raise UploadRefused(
            f"upload of {workout_id} refused: {exc.code} {exc.read().decode()[:500]}"
        ) from exc


@dataclasses.dataclass(frozen=True)
class Plan:
    """Who works out when: ``weeks`` of ``workouts_per_week`` for the first user (the one who logs in
    to the dashboard), stages of ``stage_s``; the other users the last ``others_weeks`` of them (all of
    them when None: they are there to show that accounts are kept apart, and every workout costs
    ``4 * stage_s`` seconds of audio streamed through the package)."""

    users: tuple[str, ...]
    weeks: int
    workouts_per_week: int
    stage_s: float
    model_version: str
    first_day: dt.date
    real_noise_dir: str | None = None  # ../shared/data/noise when it is there: some workouts in it
    others_weeks: int | None = None

    def jobs(self) -> list[dict[str, Any]]:
        jobs = []
        for user_index, user in enumerate(self.users):
            weeks = self.weeks if user_index == 0 or self.others_weeks is None else self.others_weeks
            for week in range(self.weeks - min(weeks, self.weeks), self.weeks):
                for workout in range(self.workouts_per_week):
                    jobs.append(
                        {
                            "id": str(
                                uuid.uuid5(uuid.NAMESPACE_URL, f"respira-demo/{user}/{week}/{workout}")
                            ),
                            "user": user,
                            "user_index": user_index,
                            "week": week,
                            "workout": workout,
                            "utc_offset_h": (-8, 1, 10)[user_index % 3],
                            "first_day": self.first_day.isoformat(),
                            "activity": ACTIVITIES[(week + workout + user_index) % len(ACTIVITIES)],
                            "environment": ("outdoor", "indoor")[(week + workout) % 2],
                            "stage_s": self.stage_s,
                            "model_version": self.model_version,
                            "real_noise_dir": self.real_noise_dir
                            if (user_index + week + workout) % REAL_NOISE_EVERY == 1
                            else None,
                        }
                    )
        return jobs


@dataclasses.dataclass
class Outcome:
    """What the simulated app did: workouts uploaded (and how many in real noise), how far the heard
    stage medians were from the rates the synthetic people actually breathed at (by the backend's
    confidence rule, over the stages that have one), the readings without a rate, and the stages with
    too few confident readings to have a median."""

    uploaded: int = 0
    errors_bpm: list[float] = dataclasses.field(default_factory=list)
    in_real_noise: int = 0
    readings: int = 0
    without_rate: int = 0
    stages_not_heard: int = 0

    @property
    def mean_error_bpm(self) -> float:
        return sum(self.errors_bpm) / len(self.errors_bpm) if self.errors_bpm else float("nan")


def simulated_workouts(package: Path, plan: Plan, workers: int | None = None) -> Iterator[dict]:
    """Simulate the plan's workouts in worker processes (each loads the package once), in plan order."""
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    with concurrent.futures.ProcessPoolExecutor(
        workers, initializer=_load_package, initargs=(str(package),)
    ) as pool:
        yield from pool.map(simulate_workout, plan.jobs())


def run_app(
    package: Path,
    plan: Plan,
    base_url: str,
    tokens: dict[str, str],
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> Outcome:
    """Simulate every workout of the plan and upload each as it is ready."""
    outcome = Outcome()
    total = len(plan.jobs())
    for result in simulated_workouts(package, plan):
        upload(base_url, tokens[result["user"]], result["id"], result["body"])
        outcome.uploaded += 1
        outcome.in_real_noise += bool(result["real_noise"])
        for stage in result["body"]["stages"]:
            segments = stage["segments"]
            outcome.readings += len(segments)
            outcome.without_rate += sum(1 for seg in segments if seg["rr_bpm"] is None)
            median = heard_median(segments)
            if median is None:
                outcome.stages_not_heard += 1
            else:
                outcome.errors_bpm.append(abs(median - result["true_rr"][stage["stage"]]))
        on_progress(outcome.uploaded, total)
    return outcome


def heard_median(segments: list[dict]) -> float | None:
    """The stage median the backend stores for these readings: its one confidence rule
    (backend.summaries.stage_rr), so the demo's error is measured on the numbers a person sees."""
    from backend.summaries import Reading, stage_rr

    readings = [Reading(s["rr_bpm"], s.get("rr_confidence"), s.get("breath_class")) for s in segments]
    return stage_rr(readings)["rr_median_bpm"]
