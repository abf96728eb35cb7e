"""A classical respiratory-rate estimator (no learning), the baseline the models must beat.

Breathing is heard as bursts of broadband noise, one per inhale and one per exhale, so the loudness of
the breath-noise band rises and falls at the breathing rate (or twice it). The estimator:

1. **Band envelopes.** A short-time power spectrum (64 ms Hann frames every 25 ms, i.e. the envelope is
   sampled at 40 Hz) summed into octave bands between 100 Hz and 6.4 kHz, each log-compressed: bursts
   of very different loudness (a soft inhale, a loud exhale) then weigh alike. Several bands rather than
   one because where breath noise lives depends on the microphone: above 1 kHz for an air microphone
   near the mouth, 100-800 Hz for a chest stethoscope (whose audio, recorded at 2-8 kHz, has nothing
   above 1-4 kHz). Below 100 Hz heart sounds dominate and are left out. A band with no energy (above
   the Nyquist rate of the original recording) is flat after the log floor and is skipped.
2. **Clean-up.** Each envelope is linearly detrended and low-passed at 1.5 Hz (faster than the fastest
   rate we look for, 60 breaths/min = 1 Hz, but it damps heart sounds at 1-2 Hz), then scaled to unit
   variance.
3. **Autocorrelation.** The normalised autocorrelation of each band; the bands are averaged with
   weights equal to how periodic each one is (its highest autocorrelation peak in the breathing lag
   range, squared), so a band that carries the breathing dominates one that carries only noise.
4. **Period.** The strongest peak at lags of 1-15 s (60-4 breaths/min), no longer than
   ``MAX_LAG_FRACTION`` of the signal, refined by parabolic interpolation.
5. **Half-period check.** If inhale and exhale bursts look alike, the strongest peak can be half the
   breathing period. A true period ``2L`` shows as stronger autocorrelation at the even multiples of
   ``L`` (inhale meets inhale) than at the odd ones (inhale meets exhale); if so the period is doubled.
   When breaths are short and evenly spaced the two cannot be told apart by any envelope method; that
   is an honest limit of the baseline.

:func:`estimate_rr_dsp` returns :class:`DspEstimate` ``(rr_bpm, confidence)``; confidence is the
combined autocorrelation at the chosen lag, clipped to [0, 1] (near 0 for noise or silence, towards 1
for clean regular breathing). ``rr_bpm`` is ``nan`` only when there is nothing periodic to measure at
all (digital silence, a constant signal). Periods longer than the usable lag range cannot be measured:
on a 6 s segment, 10 breaths/min (a 6 s period) is out of reach, as it is for any autocorrelation.

:func:`dsp_run` applies it to the segments of a manifest and returns report-ready predictions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import signal

SAMPLE_RATE = 16_000
MIN_DURATION_S = 3.5  # meant for >= 4 s; a little slack for segment bounds rounded to milliseconds
MIN_RATE_BPM = 4.0
MAX_RATE_BPM = 60.0


@dataclasses.dataclass(frozen=True)
class DspConfig:
    """Every setting of the estimator; the defaults are the tuned ones (see the module docstring)."""

    frame_s: float = 0.064
    hop_s: float = 0.025
    band_edges_hz: tuple[float, ...] = (25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0)
    lowpass_hz: float = 1.5
    min_rate_bpm: float = MIN_RATE_BPM
    max_rate_bpm: float = MAX_RATE_BPM
    max_lag_fraction: float = 0.75  # longest lag as a share of the signal: enough overlap to trust
    # Doubling the period needs the even multiples to beat the odd ones by this much autocorrelation.
    half_period_margin: float = 0.05
    shape_weight: float = 0.5
    shape_mode: str = "mean"
    halve_margin: float = 0.05
    double_margin: float = 0.05
    compress: str | float = "log"
    lag_slack: float = 1.1


DEFAULT_CONFIG = DspConfig()


@dataclasses.dataclass(frozen=True)
class DspEstimate:
    rr_bpm: float
    confidence: float


def band_envelopes(audio: np.ndarray, sample_rate: int, cfg: DspConfig) -> tuple[np.ndarray, float]:
    """Log power per band over time ``[bands, frames]`` and the envelope rate in Hz."""
    frame = round(cfg.frame_s * sample_rate)
    hop = round(cfg.hop_s * sample_rate)
    n_frames = 1 + (len(audio) - frame) // hop
    frames = np.lib.stride_tricks.sliding_window_view(audio, frame)[::hop][:n_frames]
    spec = np.abs(np.fft.rfft(frames * np.hanning(frame), axis=1)) ** 2
    freqs = np.fft.rfftfreq(frame, 1.0 / sample_rate)
    edges = cfg.band_edges_hz
    power = np.stack(
        [spec[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(edges[:-1], edges[1:])]
    )
    # Floor relative to the loudest band's typical power: an empty band becomes flat, not log(0).
    floor = 1e-6 * max(float(np.median(power, axis=1).max()), 1e-30)
    if cfg.compress == "log":
        return np.log(power + floor), sample_rate / hop
    floored = power + floor
    return (floored / np.median(floored, axis=1, keepdims=True)) ** cfg.compress, sample_rate / hop


def _autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Biased, normalised autocorrelation ``r[0..max_lag]`` (r[0] = 1) via FFT."""
    n = len(x)
    size = 1 << int(math.ceil(math.log2(2 * n)))
    spec = np.fft.rfft(x, size)
    r = np.fft.irfft(spec * np.conj(spec), size)[: max_lag + 1]
    return r / r[0]


def _peak_near(r: np.ndarray, lag: float, tolerance: float = 0.15) -> float:
    """Highest autocorrelation within ``lag * (1 +/- tolerance)``; ``nan`` if that is out of range."""
    lo, hi = int(math.floor(lag * (1 - tolerance))), int(math.ceil(lag * (1 + tolerance)))
    if hi >= len(r):
        return math.nan
    return float(r[lo : hi + 1].max())


def _parabolic(r: np.ndarray, i: int) -> tuple[float, float]:
    """Sub-sample peak position and height from the parabola through ``r[i-1], r[i], r[i+1]``."""
    if i <= 0 or i >= len(r) - 1:
        return float(i), float(r[i])
    a, b, c = r[i - 1], r[i], r[i + 1]
    denom = a - 2.0 * b + c
    if denom >= 0.0:
        return float(i), float(b)
    shift = 0.5 * (a - c) / denom
    return i + shift, float(b - 0.25 * (a - c) * shift)


def combined_autocorrelation(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE, cfg: DspConfig = DEFAULT_CONFIG
) -> tuple[np.ndarray, float, int, int]:
    """The autocorrelation whose peaks are breathing periods: loudness and spectral shape, mixed.

    Returns ``(r, env_rate_hz, min_lag, max_lag)``; ``r`` is all zeros when no band varies.
    """
    env, env_rate = band_envelopes(audio, sample_rate, cfg)
    n = env.shape[1]
    min_lag = int(math.floor(env_rate * 60.0 / cfg.max_rate_bpm))
    max_lag = min(int(math.ceil(cfg.lag_slack * env_rate * 60.0 / cfg.min_rate_bpm)), int(cfg.max_lag_fraction * n))
    sos = signal.butter(2, cfg.lowpass_hz, fs=env_rate, output="sos")
    bands = []
    for band in env:
        x = signal.detrend(band)
        if float(np.std(x)) < 1e-6:  # flat: an empty band or silence
            continue
        x = signal.sosfiltfilt(sos, x)
        std = float(np.std(x))
        if std > 1e-9:
            bands.append(x / std)
    if not bands:
        return np.zeros(max_lag + 1), env_rate, min_lag, max_lag
    x = np.stack(bands)
    acfs = np.stack([_autocorrelation(b, max_lag) for b in x])
    weights = np.maximum(acfs[:, min_lag:].max(axis=1), 0.0) ** 2
    loudness = (weights @ acfs) / weights.sum() if weights.sum() > 0 else acfs.mean(axis=0)
    if len(x) < 2 or cfg.shape_weight == 0.0:
        return loudness, env_rate, min_lag, max_lag
    shape = x - x.mean(axis=0)
    if cfg.shape_mode == "vector":
        r = sum(_autocorrelation(b, max_lag) * float(b @ b) for b in shape)
        shape_r = r / float((shape * shape).sum()) if float((shape * shape).sum()) > 0 else 0 * loudness
    else:
        shape_r = np.mean([_autocorrelation(b, max_lag) for b in shape if np.std(b) > 1e-9], axis=0)
    mixed = (1.0 - cfg.shape_weight) * loudness + cfg.shape_weight * shape_r
    return mixed, env_rate, min_lag, max_lag


def estimate_rr_dsp(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE, cfg: DspConfig = DEFAULT_CONFIG
) -> DspEstimate:
    """Respiratory rate of mono audio (at least 4 s) by envelope autocorrelation; see the module doc.

    Raises ``ValueError`` for audio that is not 1-D, not finite, or shorter than 3.5 s.
    """
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {x.shape}")
    duration_s = len(x) / sample_rate
    if duration_s < MIN_DURATION_S:
        raise ValueError(f"audio is {duration_s:.2f} s long; the DSP baseline needs at least 4 s")
    if not np.isfinite(x).all():
        raise ValueError("audio holds NaN or infinite samples")
    r, env_rate, min_lag, max_lag = combined_autocorrelation(x, sample_rate, cfg)
    if not r.any():
        return DspEstimate(math.nan, 0.0)
    # Local maxima in the lag range; the strongest one is the period candidate.
    inner = np.arange(max(min_lag, 1), max_lag)
    is_peak = (r[inner] >= r[inner - 1]) & (r[inner] > r[inner + 1])
    peaks = inner[is_peak]
    if peaks.size == 0:  # monotone in range: take the best end point, with what confidence it has
        best = int(min_lag + np.argmax(r[min_lag : max_lag + 1]))
    else:
        best = int(peaks[np.argmax(r[peaks])])
    best = _resolve_octave(r, best, min_lag, cfg)
    lag, height = _parabolic(r, best)
    return DspEstimate(60.0 * env_rate / lag, float(np.clip(height, 0.0, 1.0)))


def _local_peak(r: np.ndarray, lag: float, min_lag: int, tolerance: float = 0.15) -> int | None:
    """Index of the highest local maximum within ``lag * (1 +/- tolerance)``, or None."""
    lo = max(int(math.floor(lag * (1 - tolerance))), min_lag, 1)
    hi = min(int(math.ceil(lag * (1 + tolerance))), len(r) - 2)
    if hi < lo:
        return None
    i = lo + int(np.argmax(r[lo : hi + 1]))
    return i if r[i] >= r[i - 1] and r[i] >= r[i + 1] else None


def _multiples_mean(r: np.ndarray, lags: list[float], count: int) -> float:
    values = [_peak_near(r, lag) for lag in lags[:count]]
    return float(np.mean(values))


def _resolve_octave(r: np.ndarray, best: int, min_lag: int, cfg: DspConfig) -> int:
    """Halve or double the best lag when the multiples say it is twice or half the period.

    Lag ``P`` against ``P / 2``: if ``P / 2`` is the period, the odd multiples of ``P / 2``
    (``P / 2, 3 P / 2``) correlate as well as the even ones (``P, 2 P``); if ``P`` is the period
    (inhale and exhale alike), the odd ones are weaker. The same test decides doubling.
    Both sides use the same number of multiples, so the decay of the autocorrelation with lag does
    not favour either.
    """
    for _ in range(2):
        half = _local_peak(r, best / 2, min_lag)
        if half is None:
            break
        count = 2 if 2 * best * 1.15 < len(r) else 1
        odd = _multiples_mean(r, [half, 3 * half], count)
        even = _multiples_mean(r, [best, 2 * best], count)
        if odd >= even - cfg.halve_margin:
            best = half
        else:
            break
    double = _local_peak(r, 2 * best, min_lag)
    if double is not None:
        count = 2 if 4 * best * 1.15 < len(r) else 1
        odd = _multiples_mean(r, [best, 3 * best], count)
        even = _multiples_mean(r, [double, 4 * best], count)
        if even > odd + cfg.double_margin:
            best = double
    return best


def dsp_run(
    segments: Sequence,
    corpus_dir: Path | str,
    name: str = "DSP baseline",
    split: str = "test",
    cfg: DspConfig = DEFAULT_CONFIG,
):
    """Run the estimator on manifest segments of ``split``; returns a ``report.RunPredictions``.

    Each audio file is loaded once (at 16 kHz) and cut into its segments. A segment whose audio cannot
    be used (too short, unreadable) gets ``rr_pred_bpm = nan``; the report counts those as missing.
    """
    from training.audio import AudioError, load_audio
    from training.manifest import audio_path
    from training.report import PredictionRow, RunPredictions

    chosen = [s for s in segments if s.split == split]
    cache: dict[Path, np.ndarray | None] = {}
    rows = []
    for seg in chosen:
        path = audio_path(corpus_dir, seg)
        if path not in cache:
            try:
                cache = {path: load_audio(path)}  # keep one file: segments of a file are adjacent
            except AudioError:
                cache = {path: None}
        audio = cache[path]
        rr = math.nan
        if audio is not None:
            piece = audio[round(seg.start_s * SAMPLE_RATE) : round(seg.end_s * SAMPLE_RATE)]
            if len(piece) >= MIN_DURATION_S * SAMPLE_RATE:
                rr = estimate_rr_dsp(piece, SAMPLE_RATE, cfg).rr_bpm
        rows.append(PredictionRow.from_segment(seg, rr_pred_bpm=rr))
    return RunPredictions(name=name, model_type="dsp", units=None, augmented=False, split=split, rows=rows)
