"""Synthetic breathing with exact labels: the default training data and the fixture for everything else.

How a recording is made (:func:`synth_recording`):

1. **Rate.** A smooth target rate in breaths/min: a stage-typical centre for this participant (their
   resting rate, or their effort level within the exercise ranges), a trend (rising near the end of
   exercise, falling while recovering), a slow random drift; clipped to the stage's range
   (:data:`STAGE_RATE_RANGES_BPM`).
2. **Cycles.** Built one by one: cycle k starts at t_k with rate r_k = target(t_k) * exp(N(0, s)),
   s = the participant's breath-to-breath irregularity, clipped to the range; it lasts T_k = 60 / r_k
   and the next starts at t_k + T_k, or after an apnoea-like pause (3-10 s) when pauses are asked for.
   The first cycle starts before 0 s, so a recording begins mid-breath.
3. **Sound.** Cycle k has inhale time Ti = T / (1 + E:I) and expiratory time Te = T - Ti, where the
   E:I ratio goes from the participant's resting value (about 2, i.e. I:E 1:2) at 12 breaths/min to
   1.2 at 45 and above. An inhale burst fills most of Ti; an exhale burst fills the first 65 % (rest)
   to 90 % (heavy) of Te, the remainder being the end-expiratory pause. Bursts have smooth
   beta-shaped envelopes (the exhale peaks early and decays longer) and a per-breath depth (lognormal,
   slowly drifting). Each burst mixes three turbulent noise sources shaped by the participant's
   anatomy: *nasal* (band-limited to roughly 200-1500 Hz with a nasal resonance), *oral* (broadband
   with four vocal-tract-like resonances and a spectral tilt) and *hiss* (high-frequency turbulence,
   strongest on oral inhales). The oral share grows with rate and heavier breathing is louder.
4. **Background.** Optionally a noise kind from :mod:`training.noise` at an SNR measured on the
   breath's active parts (:func:`training.augment.mix_at_snr`), and always a *room floor*: pink-ish
   room tone plus microphone self-noise, 18-40 dB under the participant's breath level (at least
   -80 dBFS). Real recordings never fall silent between breaths: on the RRuJO recordings a breath
   cycle's loudness varies by a median 27 dB, where the generator's bursts over a bare -80 dBFS floor
   varied by 53 dB (docs/synthetic-realism.md measures both, before and after).

**Labels** (exact, computed from the cycles by :meth:`SynthRecording.label`). For a segment [s, e):

- ``respiration_count`` = sum over cycles k of |[t_k, t_k + T_k) ∩ [s, e)| / T_k: each cycle counts
  with the fraction of its duration inside the segment (so cycles cut by an edge count fractionally);
  pauses belong to no cycle.
- ``rr_bpm`` = 60 * respiration_count / (e - s). This is exactly the time average over the segment of
  the generator's instantaneous rate r(t) = 60 / T_k while cycle k is in progress and 0 during pauses
  (no-breath clips: no cycles, rate 0).
- ``breath_class`` = :func:`training.manifest.breath_class_for` (rr_bpm); no-breath clips are ``none``.
- ``noisy`` = 1 when background noise was added at an SNR below 30 dB (:mod:`training.augment`);
  ``snr_db`` is the recording's (for a no-breath clip, relative to the participant's nominal level).
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from training.augment import MAX_PEAK, active_power, draw_snr_db, is_noisy, scale_noise
from training.frontend import SAMPLE_RATE_HZ
from training.manifest import Segment, assign_splits, breath_class_for, random_segments, write_manifest
from training.noise import (
    NOISE_RMS,
    highpass,
    kinds_for,
    lowpass,
    make_noise,
    resonance_db,
    slow_random,
    spectral_noise,
)

STAGES = (1, 2, 3, 4)
STAGE_NAMES = {1: "before exercise", 2: "end of exercise", 3: "just after exercise", 4: "cooling down"}
# Stage-typical rates (breaths/min); every cycle's rate lies in its stage's range.
STAGE_RATE_RANGES_BPM: dict[int, tuple[float, float]] = {
    1: (10.0, 18.0),
    2: (25.0, 50.0),
    3: (25.0, 45.0),
    4: (15.0, 28.0),
}
REST_RATE_RANGE_BPM = STAGE_RATE_RANGES_BPM[1]
MIC_FLOOR_RMS = 1e-4  # -80 dBFS self-noise: the quietest room floor (see room_floor)
ROOM_FLOOR_BELOW_BREATH_DB = (18.0, 40.0)  # how far the room floor sits under the breath's level
_CONTROL_HZ = 10.0  # the target rate is tracked at this rate
_PAUSE_RANGE_S = (3.0, 10.0)


# ---------------------------------------------------------------------------------------------------------
# Participants


@dataclasses.dataclass(frozen=True)
class Participant:
    """One simulated person: the timbre and habits that make their breathing theirs.

    Drawn once from a seed (:func:`make_participant`), so all of a participant's recordings share a
    voice-like timbre, which is what makes participant-level splits meaningful.
    """

    participant_id: str
    gender: str
    level_dbfs: float  # active RMS of a resting breath
    formants_hz: tuple[float, ...]  # oral-path resonances
    formant_bandwidths_hz: tuple[float, ...]
    formant_gains_db: tuple[float, ...]
    tilt_db_per_octave: float  # oral spectral slope above 1 kHz
    nasal_band_hz: tuple[float, float]
    nasal_peak_hz: float
    nasal_tendency: float  # 0..1: share of nasal breathing at rest
    oral_switch_bpm: float  # rate around which breathing turns oral
    rest_rate_bpm: float
    effort: float  # 0..1: where in the exercise ranges this person's rates fall
    irregularity: float  # log-sd of breath-to-breath rate
    ie_rest: float  # expiratory : inspiratory time at rest
    inhale_gain: float  # inhale loudness relative to exhale


def make_participant(participant_id: str, seed: int) -> Participant:
    """A participant drawn from ``seed`` (same seed -> same person)."""
    rng = np.random.default_rng(seed)
    gender = "female" if rng.random() < 0.5 else "male"
    scale = (1.15 if gender == "female" else 1.0) * rng.uniform(0.95, 1.05)  # shorter tract: higher
    formants = sorted(
        float(rng.uniform(lo, hi) * scale)
        for lo, hi in ((550, 850), (1100, 1800), (2300, 3000), (3400, 4300))
    )
    return Participant(
        participant_id=participant_id,
        gender=gender,
        level_dbfs=float(rng.uniform(-42, -26)),
        formants_hz=tuple(formants),
        formant_bandwidths_hz=tuple(float(b) for b in rng.uniform(120, 350, 4)),
        formant_gains_db=tuple(float(g) for g in rng.uniform(4, 12, 4)),
        tilt_db_per_octave=float(rng.uniform(-5, -1)),
        nasal_band_hz=(float(rng.uniform(150, 260)), float(rng.uniform(1200, 1800))),
        nasal_peak_hz=float(rng.uniform(250, 500)),
        nasal_tendency=float(rng.uniform(0.2, 0.95)),
        oral_switch_bpm=float(rng.uniform(20, 34)),
        rest_rate_bpm=float(rng.uniform(11, 17)),
        effort=float(rng.uniform(0.15, 0.85)),
        irregularity=float(rng.uniform(0.04, 0.12)),
        ie_rest=float(rng.uniform(1.7, 2.4)),
        inhale_gain=float(rng.uniform(0.5, 0.95)),
    )


def _nasal_shape(p: Participant) -> Callable[[np.ndarray], np.ndarray]:
    lo_hz, hi_hz = p.nasal_band_hz

    def shape(f: np.ndarray) -> np.ndarray:
        return (
            highpass(f, lo_hz, 2)
            * lowpass(f, hi_hz, 4)
            * 10 ** (resonance_db(f, p.nasal_peak_hz, 300, 6) / 20)
        )

    return shape


def _oral_shape(p: Participant) -> Callable[[np.ndarray], np.ndarray]:
    def shape(f: np.ndarray) -> np.ndarray:
        db = p.tilt_db_per_octave * np.log2(np.maximum(f, 1000.0) / 1000.0)
        for centre, bandwidth, gain in zip(
            p.formants_hz, p.formant_bandwidths_hz, p.formant_gains_db, strict=True
        ):
            db = db + resonance_db(f, centre, bandwidth, gain)
        return highpass(f, 150, 2) * lowpass(f, 7000, 2) * 10 ** (db / 20)

    return shape


def _hiss_shape(p: Participant) -> Callable[[np.ndarray], np.ndarray]:
    def shape(f: np.ndarray) -> np.ndarray:
        db = resonance_db(f, p.formants_hz[2], 600, 4) + resonance_db(f, p.formants_hz[3], 800, 4)
        return highpass(f, 2500, 4) * lowpass(f, 7000, 2) * 10 ** (db / 20)

    return shape


# ---------------------------------------------------------------------------------------------------------
# Rate and cycles


def rate_range_bpm(stage: int | None, rate_bpm: float | None = None) -> tuple[float, float]:
    """The range every cycle's rate is kept in: the stage's, +-15 % around a requested rate, or rest."""
    if rate_bpm is not None:
        return 0.85 * rate_bpm, 1.15 * rate_bpm
    if stage is None:
        return REST_RATE_RANGE_BPM
    return STAGE_RATE_RANGES_BPM[stage]


def _target_rate(
    p: Participant, stage: int | None, duration_s: float, rng: np.random.Generator, rate_bpm: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """The smooth target rate, sampled at ``_CONTROL_HZ``: (times_s, rates_bpm)."""
    lo, hi = rate_range_bpm(stage, rate_bpm)
    if rate_bpm is not None:
        centre, trend, drift = rate_bpm, 0.0, 0.03
    else:
        # Where in the stage's range this person is today: their resting rate or effort, give or take.
        usual = (p.rest_rate_bpm - lo) / (hi - lo) if stage in (None, 1) else p.effort
        u = float(np.clip(usual + rng.normal(0, 0.12), 0.1, 0.9))
        trend = {None: 0.0, 1: 0.0, 2: 0.06, 3: -0.15, 4: -0.06}[stage]  # pushing / recovering / settling
        centre, drift = lo + u * (hi - lo), 0.05
    n_ctrl = math.ceil(duration_s * _CONTROL_HZ) + 1
    times = np.arange(n_ctrl) / _CONTROL_HZ
    wander = slow_random(n_ctrl, rng, int(_CONTROL_HZ), cutoff_hz=0.05, control_hz=2.0)
    rates = centre * (1 + trend * (times / max(duration_s, 1e-9) - 0.5)) * (1 + drift * wander)
    return times, np.clip(rates, lo, hi)


@dataclasses.dataclass
class BreathCycles:
    """The cycles of a recording (seconds; a cycle is inhale + exhale + end-expiratory pause)."""

    start_s: np.ndarray
    duration_s: np.ndarray
    inhale_s: np.ndarray  # inspiratory time Ti of each cycle

    @property
    def end_s(self) -> np.ndarray:
        return self.start_s + self.duration_s

    @property
    def rate_bpm(self) -> np.ndarray:
        """Instantaneous rate while each cycle is in progress."""
        return 60.0 / self.duration_s

    def __len__(self) -> int:
        return int(self.start_s.size)

    def phase_at(self, times_s: np.ndarray) -> np.ndarray:
        """Frame labels: 0 while inhaling, 1 while exhaling (the exhale burst), 2 otherwise (the
        end-expiratory pause, an apnoea, no breathing). Indices follow :data:`training.models.PHASES`."""
        times = np.asarray(times_s, dtype=np.float64)
        labels = np.full(times.shape, 2, dtype=np.int64)
        if not len(self):
            return labels
        k = np.searchsorted(self.start_s, times, side="right") - 1
        inside = k >= 0
        kk = np.clip(k, 0, None)
        offset = times - self.start_s[kk]
        ti = self.inhale_s[kk]
        te_burst = exhale_fill(self.rate_bpm[kk]) * (self.duration_s[kk] - ti)
        labels[inside & (offset < ti)] = 0
        labels[inside & (offset >= ti) & (offset < ti + te_burst)] = 1
        labels[inside & (offset >= self.duration_s[kk])] = 2  # a pause after the last cycle
        return labels

    def count_in(self, start_s: float, end_s: float) -> float:
        """Cycles in [start_s, end_s), each weighted by the fraction of its duration inside."""
        if not len(self):
            return 0.0
        overlap = np.minimum(self.end_s, end_s) - np.maximum(self.start_s, start_s)
        return float(np.sum(np.clip(overlap, 0.0, None) / self.duration_s))


def exhale_fill(rate_bpm: np.ndarray | float) -> np.ndarray:
    """Share of the expiratory time filled by the exhale burst: 65 % at rest to 90 % when heavy; the
    rest is the end-expiratory pause."""
    heaviness = np.clip((np.asarray(rate_bpm) - 12.0) / (45.0 - 12.0), 0.0, 1.0)
    return 0.65 + 0.25 * heaviness


def ie_ratio(rate_bpm: np.ndarray | float, ie_rest: float) -> np.ndarray:
    """Expiratory : inspiratory time: ``ie_rest`` at <= 12 breaths/min, 1.2 at >= 45, linear between."""
    heaviness = np.clip((45.0 - np.asarray(rate_bpm)) / (45.0 - 12.0), 0.0, 1.0)
    return 1.2 + (ie_rest - 1.2) * heaviness


def _cycles(
    p: Participant,
    stage: int | None,
    duration_s: float,
    rng: np.random.Generator,
    rate_bpm: float | None,
    pause_prob: float,
) -> BreathCycles:
    times, targets = _target_rate(p, stage, duration_s, rng, rate_bpm)
    lo, hi = rate_range_bpm(stage, rate_bpm)
    starts, durations = [], []
    t = -rng.uniform(0.0, 1.0) * 60.0 / targets[0]
    while t < duration_s:
        target = float(np.interp(t, times, targets))
        for _ in range(20):  # jitter from a truncated lognormal: no pile-up at the range's edges
            rate = target * float(np.exp(rng.normal(0, p.irregularity)))
            if lo <= rate <= hi:
                break
        rate = min(max(rate, lo), hi)
        starts.append(t)
        durations.append(60.0 / rate)
        t += durations[-1]
        if pause_prob > 0 and rng.random() < pause_prob:
            t += rng.uniform(*_PAUSE_RANGE_S)
    start = np.array(starts)
    duration = np.array(durations)
    ie = ie_ratio(60.0 / duration, p.ie_rest) * rng.uniform(0.92, 1.08, duration.size)
    return BreathCycles(start_s=start, duration_s=duration, inhale_s=duration / (1.0 + ie))


# ---------------------------------------------------------------------------------------------------------
# Sound


def _burst_shape(length: int, rise: float, fall: float) -> np.ndarray:
    """Smooth envelope x^rise (1-x)^fall on (0, 1), peak 1: zero at both ends, no clicks."""
    x = (np.arange(length, dtype=np.float32) + 0.5) / length
    peak_x = rise / (rise + fall)
    return (x**rise * (1 - x) ** fall) / (peak_x**rise * (1 - peak_x) ** fall)


_INHALE_SHAPE = (1.6, 1.6)
_EXHALE_SHAPE = (1.2, 2.6)
# RMS of the beta envelopes over their loud parts; dividing by it makes level_dbfs the active RMS.
_ENVELOPE_ACTIVE_RMS = 0.8


def _add_burst(
    envelopes: np.ndarray, onset_s: float, length_s: float, shape: tuple[float, float], weights: np.ndarray
) -> None:
    """Add one burst's envelope, scaled per source by ``weights``, to ``envelopes`` [source, sample]."""
    n = envelopes.shape[1]
    first, length = round(onset_s * SAMPLE_RATE_HZ), max(round(length_s * SAMPLE_RATE_HZ), 2)
    lo, hi = max(first, 0), min(first + length, n)
    if hi > lo:
        envelopes[:, lo:hi] += np.outer(weights, _burst_shape(length, *shape)[lo - first : hi - first])


def _render_breath(p: Participant, cycles: BreathCycles, n: int, rng: np.random.Generator) -> np.ndarray:
    """The breath signal (no background, no floor) for ``cycles`` over ``n`` samples."""
    # One envelope per turbulent source: nasal, oral, high-frequency hiss.
    envelopes = np.zeros((3, n), dtype=np.float32)
    if not len(cycles):
        return envelopes[0]
    rates = cycles.rate_bpm
    heaviness = np.clip((rates - 12.0) / (45.0 - 12.0), 0.0, 1.0)
    # Depth: lognormal per breath around a slowly wandering mean (AR(1) in log).
    log_depth = np.zeros(len(cycles))
    for k in range(1, len(cycles)):
        log_depth[k] = 0.6 * log_depth[k - 1] + rng.normal(0, 0.15)
    loud_db = np.clip(0.3 * (rates - 14.0), -1.5, 9.0)  # heavier is louder
    amp = 10 ** ((p.level_dbfs + loud_db) / 20) * np.exp(log_depth) / _ENVELOPE_ACTIVE_RMS
    turning_oral = 1.0 / (1.0 + np.exp(-(rates - p.oral_switch_bpm) / 3.0))
    oral = np.clip(1.0 - p.nasal_tendency * (1.0 - turning_oral) + rng.normal(0, 0.1, len(cycles)), 0.0, 1.0)
    fill = exhale_fill(rates)  # the rest of Te is the end-expiratory pause
    inhale_fill = rng.uniform(0.85, 0.92, len(cycles))
    for k in range(len(cycles)):
        ti = cycles.inhale_s[k]
        te = cycles.duration_s[k] - ti
        # Equal-power nasal/oral mix; the mouth is the louder path. Hiss is mostly oral and inhaled.
        nasal_w, oral_w = math.sqrt(1.0 - oral[k]), 1.4 * math.sqrt(oral[k])
        hiss_w = (1.0 + heaviness[k]) * np.array([0.35 * (0.3 + 0.7 * oral[k]), 0.15 * oral[k]])
        inhale = amp[k] * p.inhale_gain * np.array([nasal_w, oral_w, hiss_w[0]])
        exhale = amp[k] * np.array([nasal_w, oral_w, hiss_w[1]])
        _add_burst(envelopes, cycles.start_s[k] + 0.03 * ti, inhale_fill[k] * ti, _INHALE_SHAPE, inhale)
        _add_burst(envelopes, cycles.start_s[k] + ti + 0.02 * te, fill[k] * te, _EXHALE_SHAPE, exhale)
    breath = envelopes[0] * spectral_noise(n, _nasal_shape(p), rng, SAMPLE_RATE_HZ)
    breath += envelopes[1] * spectral_noise(n, _oral_shape(p), rng, SAMPLE_RATE_HZ)
    breath += envelopes[2] * spectral_noise(n, _hiss_shape(p), rng, SAMPLE_RATE_HZ)
    return breath


def room_floor(
    p: Participant,
    n: int,
    rng: np.random.Generator,
    below_breath_db: tuple[float, float] | None = ROOM_FLOOR_BELOW_BREATH_DB,
) -> np.ndarray:
    """Room tone and microphone self-noise: pink-ish noise (-3 dB/octave above 100 Hz, high-passed at
    40 Hz) 18-40 dB under the participant's breath level, and never under -80 dBFS. ``None``: only
    the -80 dBFS self-noise (the generator before the room floor; :mod:`training.realism`)."""
    below_db = rng.uniform(*below_breath_db) if below_breath_db is not None else np.inf
    rms = max(10 ** ((p.level_dbfs - below_db) / 20), MIC_FLOOR_RMS)

    def shape(f: np.ndarray) -> np.ndarray:
        return highpass(f, 40.0, 2) / np.sqrt(np.maximum(f, 100.0) / 100.0)

    return (rms * spectral_noise(n, shape, rng, SAMPLE_RATE_HZ)).astype(np.float32)


@dataclasses.dataclass
class SynthRecording:
    """A synthetic recording: the audio, its clean breath track and the cycles its labels come from."""

    audio: np.ndarray  # float32, the microphone signal (breath + background + floor)
    clean: np.ndarray  # float32, breath + floor without the background
    cycles: BreathCycles
    participant: Participant
    stage: int | None
    environment: str
    noise_kind: str | None
    snr_db: float | None
    sample_rate: int = SAMPLE_RATE_HZ

    @property
    def duration_s(self) -> float:
        return self.audio.size / self.sample_rate

    @property
    def noisy(self) -> int:
        return is_noisy(self.snr_db if self.noise_kind else None)

    def label(self, start_s: float, end_s: float) -> tuple[float, float]:
        """(rr_bpm, respiration_count) of [start_s, end_s) by the module's rule."""
        if not end_s > start_s:
            raise ValueError(f"segment end {end_s} must be after its start {start_s}")
        count = self.cycles.count_in(start_s, end_s)
        return 60.0 * count / (end_s - start_s), count

    def breath_class(self, start_s: float, end_s: float) -> str:
        return breath_class_for(self.label(start_s, end_s)[0])


def synth_recording(
    participant: Participant,
    stage: int | None,
    duration_s: float,
    rng: np.random.Generator,
    environment: str = "indoor",
    noise_kind: str | None = None,
    snr_db: float | None = None,
    rate_bpm: float | None = None,
    pause_prob: float = 0.0,
    room_floor_below_breath_db: tuple[float, float] | None = ROOM_FLOOR_BELOW_BREATH_DB,
) -> SynthRecording:
    """Simulate ``participant`` breathing for ``duration_s`` seconds.

    ``stage`` (1-4) picks the stage-typical rate; ``None`` means outside the protocol (resting rates).
    ``rate_bpm`` instead centres the rate there (+-15 %); ``rate_bpm=0`` makes a no-breath clip.
    ``pause_prob`` is the chance of an apnoea-like pause after each cycle. ``noise_kind`` (from
    :data:`training.noise.NOISE_KINDS`) needs ``snr_db``; without it the clip is clean.
    """
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage must be 1-4 or None, not {stage!r}")
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, not {duration_s!r}")
    if rate_bpm is not None and rate_bpm < 0:
        raise ValueError(f"rate_bpm must be >= 0, not {rate_bpm}")
    if (noise_kind is None) != (snr_db is None):
        raise ValueError("give noise_kind and snr_db together (or neither, for a clean clip)")
    if noise_kind is not None and noise_kind not in kinds_for(environment):
        raise ValueError(
            f"noise kind {noise_kind!r} is not one heard {environment} ({kinds_for(environment)})"
        )
    n = round(duration_s * SAMPLE_RATE_HZ)
    if rate_bpm == 0:
        cycles = BreathCycles(np.zeros(0), np.zeros(0), np.zeros(0))
    else:
        cycles = _cycles(participant, stage, duration_s, rng, rate_bpm, pause_prob)
    breath = _render_breath(participant, cycles, n, rng)
    floor = room_floor(participant, n, rng, room_floor_below_breath_db)
    audio = breath + floor
    if noise_kind is not None and snr_db is not None:
        noise = make_noise(noise_kind, duration_s, rng, SAMPLE_RATE_HZ)[:n]
        if active_power(breath, SAMPLE_RATE_HZ) > 0:
            audio = audio + scale_noise(breath, noise, snr_db, SAMPLE_RATE_HZ)
        else:  # nothing to measure against: relative to the participant's nominal breath level
            audio = audio + noise * (10 ** ((participant.level_dbfs - snr_db) / 20) / NOISE_RMS)
    # Keep the peak under full scale; scaling the whole clip changes neither its SNR nor its labels.
    scale = min(1.0, MAX_PEAK / max(float(np.max(np.abs(audio))), 1e-12))
    return SynthRecording(
        audio=(audio * scale).astype(np.float32),
        clean=((breath + floor) * scale).astype(np.float32),
        cycles=cycles,
        participant=participant,
        stage=stage,
        environment=environment,
        noise_kind=noise_kind,
        snr_db=snr_db,
    )


# ---------------------------------------------------------------------------------------------------------
# The corpus

SOURCE = "synth"
WORKOUTS_PER_PARTICIPANT = 2
INDOOR_SHARE = 0.65
CLEAN_SHARE = 0.25  # recordings with no background at all
NO_BREATH_SHARE = 0.5  # chance a workout session also has a no-breath clip
PAUSE_CLIP_SHARE = 0.25  # ... and a resting clip with apnoea-like pauses
_MEAN_SEGMENT_S = 5.5


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything needed to render one recording, decided up front so rendering order does not matter."""

    recording: str
    participant: Participant
    stage: int | None
    duration_s: float
    environment: str
    noise_kind: str | None
    snr_db: float | None
    rate_bpm: float | None
    pause_prob: float
    seed: int
    cuts: tuple[tuple[float, float], ...]


def _draw_noise(
    stage: int | None, environment: str, rng: np.random.Generator
) -> tuple[str | None, float | None]:
    if rng.random() < CLEAN_SHARE:
        return None, None
    still_running = stage == 2 and rng.random() < 0.5  # treadmill belt or running steps
    kind = "footsteps" if still_running else str(rng.choice(kinds_for(environment)))
    return kind, draw_snr_db(rng)


def _plan_corpus(n_segments: int, seed: int) -> list[_Plan]:
    """Workout sessions (four stages, plus some no-breath and pause clips) until ``n_segments`` cuts."""
    rng = np.random.default_rng(seed)
    # Tiny corpora get shorter stages so that at least three participants (train/val/test) appear.
    stage_s = float(np.clip(round(n_segments * _MEAN_SEGMENT_S / 12), 15, 60))
    sessions = math.ceil(n_segments / (4 * stage_s / _MEAN_SEGMENT_S))
    # Repeat workouts (as over weeks) in big corpora, but never fewer than ~10 people while the
    # corpus can hold them, so that a 70/15/15 split by participant is not a 1/1/1 split.
    n_participants = max(3, min(10, sessions), math.ceil(sessions / WORKOUTS_PER_PARTICIPANT))
    participants = [
        make_participant(f"synth{seed}-p{i:03d}", int(s))
        for i, s in enumerate(rng.integers(0, 2**63 - 1, size=n_participants))
    ]
    plans: list[_Plan] = []
    total = 0
    session = 0
    while total < n_segments:
        person = participants[session % n_participants]
        workout = session // n_participants
        environment = "indoor" if rng.random() < INDOOR_SHARE else "outdoor"
        clips: list[tuple[str, int | None, float, float | None, float]] = [
            (f"s{stage}", stage, stage_s, None, 0.0) for stage in STAGES
        ]
        if rng.random() < NO_BREATH_SHARE:
            clips.append(("nobreath", None, max(15.0, 0.75 * stage_s), 0.0, 0.0))
        if rng.random() < PAUSE_CLIP_SHARE:
            clips.append(("pauses", None, stage_s, None, float(rng.uniform(0.15, 0.35))))
        for name, stage, duration_s, rate_bpm, pause_prob in clips:
            if total >= n_segments:
                break
            cuts = random_segments(duration_s, rng)[: n_segments - total]
            if not cuts:
                continue
            kind, snr_db = _draw_noise(stage, environment, rng)
            plans.append(
                _Plan(
                    recording=f"{person.participant_id}-w{workout}-{name}",
                    participant=person,
                    stage=stage,
                    duration_s=cuts[-1][1] if total + len(cuts) >= n_segments else duration_s,
                    environment=environment,
                    noise_kind=kind,
                    snr_db=snr_db,
                    rate_bpm=rate_bpm,
                    pause_prob=pause_prob,
                    seed=int(rng.integers(0, 2**63 - 1)),
                    cuts=tuple(cuts),
                )
            )
            total += len(cuts)
        session += 1
    return plans


def _render(plan: _Plan, out_dir: str) -> list[Segment]:
    """Render one planned recording, write its audio, and label its segments."""
    rec = synth_recording(
        plan.participant,
        plan.stage,
        plan.duration_s,
        np.random.default_rng(plan.seed),
        environment=plan.environment,
        noise_kind=plan.noise_kind,
        snr_db=plan.snr_db,
        rate_bpm=plan.rate_bpm,
        pause_prob=plan.pause_prob,
    )
    rel = f"audio/{plan.recording}.flac"
    sf.write(Path(out_dir) / rel, rec.audio, SAMPLE_RATE_HZ, format="FLAC", subtype="PCM_16")
    segments = []
    for start_s, end_s in plan.cuts:
        rr_bpm, count = (round(value, 4) for value in rec.label(start_s, end_s))
        segments.append(
            Segment(
                path=rel,
                start_s=start_s,
                end_s=end_s,
                rr_bpm=rr_bpm,
                respiration_count=count,
                breath_class=breath_class_for(rr_bpm),  # of the value written, so readers agree
                noisy=rec.noisy,
                stage=plan.stage,
                participant=plan.participant.participant_id,
                gender=plan.participant.gender,
                environment=plan.environment,
                source=SOURCE,
                snr_db=None if plan.snr_db is None else round(plan.snr_db, 3),
                recording=plan.recording,
            )
        )
    return segments


def build_synthetic_corpus(
    out_dir: str | Path, n_segments: int, seed: int, progress: bool = True, workers: int | None = None
) -> list[Segment]:
    """Simulate workouts and write a corpus: ``out_dir/audio/*.flac`` and ``out_dir/manifest.csv``.

    Participants each do a couple of workouts (four one-minute stages, sometimes also a no-breath clip
    and a resting clip with pauses); each recording is one 16-bit FLAC file, cut into random 4-7 s
    segments. Exactly ``n_segments`` rows, split by participant with ``seed``. The same seed gives a
    byte-identical manifest and audio whatever ``workers`` is (each recording has its own seed and
    rows are gathered in plan order); ``workers`` defaults to up to 2 processes.
    """
    if n_segments < 1:
        raise ValueError(f"n_segments must be at least 1, not {n_segments}")
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    plans = _plan_corpus(n_segments, seed)
    workers = min(2, multiprocessing.cpu_count()) if workers is None else workers
    from tqdm import tqdm

    bar = tqdm(total=n_segments, desc="synth", unit="segment", disable=not progress)
    segments: list[Segment] = []
    if workers <= 1 or len(plans) < 4:
        results = (_render(plan, str(out)) for plan in plans)
        for rows in results:
            segments.extend(rows)
            bar.update(len(rows))
    else:
        # spawn: workers never inherit the parent's threads (torch may be loaded there).
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for rows in pool.map(_render, plans, [str(out)] * len(plans)):
                segments.extend(rows)
                bar.update(len(rows))
    bar.close()
    assign_splits(segments, seed)
    write_manifest(segments, out)
    return segments
