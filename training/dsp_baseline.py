"""A classical respiratory-rate estimator (no learning): the baseline the models must beat.

Breathing is heard as bursts of noise, one per inhale and one per exhale, so the loudness of the breath
bands rises and falls at the breathing rate (or at twice it). :func:`estimate_rr_dsp`:

1. **Band envelopes.** A short-time power spectrum (64 ms Hann frames every 25 ms, so the envelopes are
   sampled at 40 Hz) summed into octave bands from 25 Hz to 6.4 kHz and log-compressed, so that bursts
   of very different loudness (a soft inhale, a loud exhale) weigh alike. Several bands rather than one
   because where breathing is heard depends on the microphone: above 1 kHz for an air microphone near
   the mouth, below 800 Hz for a chest stethoscope (whose audio, recorded at 2-8 kHz, has nothing above
   1-4 kHz; on the RRuJO stethoscope recordings the bands under 100 Hz carry much of the breathing).
   A band with no energy (above the Nyquist rate of the original recording) is flat after the log
   floor and is skipped.
2. **Clean-up.** Each envelope is linearly detrended, low-passed at 1 Hz (the fastest rate looked for
   is 60 breaths/min = 1 Hz; the cut damps heart sounds at 1-2 Hz) and scaled to unit variance. The
   low-pass is a zero-phase FIR (a Hann-windowed sinc spanning 2 s, applied as a 'same' convolution)
   rather than a forward-backward IIR: on the 210 RRuJO recordings the two give the same share within
   1 breath/min (92 %; MAE 0.68 vs 0.73), the FIR is one convolution that a Core ML graph can hold,
   and it needs nothing beyond numpy (``scipy.signal`` alone cost 2.4 s of every ``estimate`` start).
3. **Autocorrelation** (biased, so long lags are not favoured by their few products), half from
   *loudness* and half from *spectral shape*. Loudness: each band's autocorrelation, averaged with
   weights equal to how periodic the band is (its highest peak in the breathing lag range, squared),
   so bands that carry the breathing dominate bands that carry only noise. Spectral shape: the same for
   the band envelopes minus their mean over bands; inhale and exhale differ in timbre more than in
   loudness, so shape is what tells a breath cycle from half of one.
4. **Period.** The strongest peak at lags of 1-15 s (60-4 breaths/min; 10% slack at the slow end so
   a period of exactly 15 s is still a peak), at most ``max_lag_fraction`` of the signal, refined by
   parabolic interpolation.
5. **Octave check.** The strongest peak can be half the breathing period (inhale and exhale alike) or
   twice it (a slow drift). Lag ``P`` is halved when the odd multiples of ``P / 2`` correlate about as
   well as the even ones (then ``P / 2`` is a period), and doubled when the even multiples of ``P``
   beat the odd ones (then only ``2 P`` is); see :func:`_resolve_octave`.

It returns :class:`DspEstimate` ``(rr_bpm, confidence)``: confidence is the autocorrelation at the
chosen lag clipped to [0, 1]: about 0.05-0.15 for noise; 0.4-0.95 for regular breathing heard over
several cycles, but often only 0.1-0.4 on real recordings and 4-7 s segments, so it ranks estimates
rather than telling breathing from its absence. ``rr_bpm`` is ``nan`` only when nothing varies at all
(digital silence, a constant signal). Honest limits: a period longer than ``max_lag_fraction`` of the
audio cannot be seen (on a 6 s segment, 12 breaths/min reads as its half period, 24); evenly spaced,
identical inhale and exhale bursts are indistinguishable from breathing at twice the rate; a
no-breath clip still gets a rate (of whatever the noise does).

Tuning (the defaults): on generated band-limited noise bursts at 4-60 breaths/min with and without
noise (tests/training/test_dsp_baseline.py) and on the 210 whole RRuJO recordings, all subjects: MAE
0.68 breaths/min, 92% within 1 (the misses are octave errors). Using every subject, held-out ones
included, can only flatter the baseline, never the models compared with it.

:func:`dsp_run` applies the estimator to the segments of a manifest and returns report-ready rows.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training.frontend import SAMPLE_RATE_HZ as SAMPLE_RATE  # the one definition, as named here

if TYPE_CHECKING:
    from training.manifest import Segment
    from training.report import RunPredictions

MIN_DURATION_S = 3.5  # meant for >= 4 s; a little slack for segment bounds rounded to milliseconds
MIN_RATE_BPM = 4.0
MAX_RATE_BPM = 60.0
LOWPASS_SPAN_S = 2.0  # length of the envelopes' FIR low-pass (step 2)


@dataclasses.dataclass(frozen=True)
class DspConfig:
    """Every setting of the estimator; the defaults are the tuned ones (see the module docstring)."""

    frame_s: float = 0.064
    hop_s: float = 0.025
    band_edges_hz: tuple[float, ...] = (25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0)
    lowpass_hz: float = 1.0
    min_rate_bpm: float = MIN_RATE_BPM
    max_rate_bpm: float = MAX_RATE_BPM
    lag_slack: float = 1.1  # search 10% beyond the slowest rate's period, so it can be a peak
    max_lag_fraction: float = 0.75  # longest lag as a share of the signal: enough overlap to trust
    shape_weight: float = 0.5  # share of spectral shape (vs loudness) in the autocorrelation
    # Halve the period when odd multiples of the half correlate within this of the even ones; double
    # it when even multiples beat odd ones by more than this.
    halve_margin: float = 0.05
    double_margin: float = 0.05


DEFAULT_CONFIG = DspConfig()


@dataclasses.dataclass(frozen=True)
class DspEstimate:
    rr_bpm: float
    confidence: float


def band_matrix(sample_rate: int, cfg: DspConfig) -> np.ndarray:
    """Which DFT bin (rows, of a ``frame_s`` frame) sums into which band (columns): 0/1 float32."""
    freqs = np.fft.rfftfreq(round(cfg.frame_s * sample_rate), 1.0 / sample_rate)
    bands = [(freqs >= lo) & (freqs < hi) for lo, hi in itertools.pairwise(cfg.band_edges_hz)]
    return np.stack(bands, 1).astype(np.float32)


def band_powers(audio: np.ndarray, sample_rate: int, cfg: DspConfig) -> tuple[np.ndarray, float]:
    """Power per band over time ``[bands, frames]`` (float32; frame ``j`` starts at sample
    ``j * hop``) and the envelope rate in Hz. The Core ML package computes the same from its chunks."""
    frame = round(cfg.frame_s * sample_rate)
    hop = round(cfg.hop_s * sample_rate)
    frames = np.lib.stride_tricks.sliding_window_view(np.asarray(audio, dtype=np.float32), frame)[::hop]
    # float32 FFT and band sums as one matrix product: half the time of float64 and boolean masks
    spec = np.fft.rfft(frames * np.hanning(frame).astype(np.float32), axis=1)
    return ((spec.real**2 + spec.imag**2) @ band_matrix(sample_rate, cfg)).T, sample_rate / hop


def band_envelopes(audio: np.ndarray, sample_rate: int, cfg: DspConfig) -> tuple[np.ndarray, float]:
    """Log power per band over time ``[bands, frames]`` and the envelope rate in Hz."""
    power, env_rate = band_powers(audio, sample_rate, cfg)
    power = power.astype(np.float64)
    # Floor relative to the loudest band's typical power: an empty band becomes flat, not log(0).
    floor = 1e-6 * max(float(np.median(power, axis=1).max()), 1e-30)
    return np.log(power + floor), env_rate


def _autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Biased, normalised autocorrelation ``r[..., 0..max_lag]`` (r[0] = 1) of each row, via FFT."""
    size = 1 << math.ceil(math.log2(2 * x.shape[-1]))
    spec = np.fft.rfft(x, size, axis=-1)
    r = np.fft.irfft(spec.real**2 + spec.imag**2, size, axis=-1)[..., : max_lag + 1]
    return r / r[..., :1]


def _mean_autocorrelation(x: np.ndarray, max_lag: int, min_lag: int | None = None) -> np.ndarray:
    """Autocorrelations of the rows of ``x``, averaged; with ``min_lag``, weighted by each row's
    highest peak at lags from ``min_lag`` on, squared (how periodic the row is)."""
    varying = x[x.std(axis=1) > 1e-9]
    if not len(varying):
        return np.zeros(max_lag + 1)
    acfs = _autocorrelation(varying, max_lag)
    if min_lag is None:
        return acfs.mean(axis=0)
    weights = np.maximum(acfs[:, min_lag:].max(axis=1), 0.0) ** 2
    if weights.sum() <= 0.0:
        return acfs.mean(axis=0)
    return (weights @ acfs) / weights.sum()


def combined_autocorrelation(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE, cfg: DspConfig = DEFAULT_CONFIG
) -> tuple[np.ndarray, float, int, int]:
    """The autocorrelation whose peaks are breathing periods: loudness and spectral shape, mixed.

    Returns ``(r, env_rate_hz, min_lag, max_lag)`` (lags in envelope frames); ``r`` is all zeros when
    no band varies.
    """
    env, env_rate = band_envelopes(audio, sample_rate, cfg)
    return envelope_autocorrelation(env, env_rate, cfg)


def lowpass_kernel(cutoff_hz: float, rate_hz: float, span_s: float = LOWPASS_SPAN_S) -> np.ndarray:
    """Zero-phase FIR low-pass: a Hann-windowed sinc over ``span_s`` seconds, unit gain at DC."""
    half = max(1, round(0.5 * span_s * rate_hz))
    t = np.arange(-half, half + 1) / rate_hz
    kernel = np.sinc(2.0 * cutoff_hz * t) * np.hanning(2 * half + 3)[1:-1]
    return kernel / kernel.sum()


def detrend(x: np.ndarray) -> np.ndarray:
    """Each row of ``x`` minus its least-squares straight line."""
    t = np.arange(x.shape[-1], dtype=np.float64)
    t -= t.mean()
    centred = x - x.mean(axis=-1, keepdims=True)
    slope = (centred @ t) / max(float(t @ t), 1e-30)
    return centred - slope[..., None] * t


def envelope_autocorrelation(
    env: np.ndarray, env_rate: float, cfg: DspConfig = DEFAULT_CONFIG
) -> tuple[np.ndarray, float, int, int]:
    """Steps 2-3 of the module docstring on band envelopes ``[bands, frames]`` already computed
    (:mod:`training.estimator` computes a recording's envelopes once and reads windows of them)."""
    min_lag = math.floor(env_rate * 60.0 / cfg.max_rate_bpm)
    slowest_period = math.ceil(cfg.lag_slack * env_rate * 60.0 / cfg.min_rate_bpm)
    max_lag = min(slowest_period, int(cfg.max_lag_fraction * env.shape[1]))
    x = detrend(np.asarray(env, dtype=np.float64))
    x = x[x.std(axis=1) >= 1e-6]  # flat: an empty band, or silence
    if len(x):
        kernel = lowpass_kernel(cfg.lowpass_hz, env_rate)
        x = np.stack([np.convolve(row, kernel, mode="same") for row in x])
        std = x.std(axis=1)
        x = x[std > 1e-9] / std[std > 1e-9, None]
    if not len(x):
        return np.zeros(max_lag + 1), env_rate, min_lag, max_lag
    r = _mean_autocorrelation(x, max_lag, min_lag)
    if len(x) >= 2 and cfg.shape_weight > 0.0:
        shape_r = _mean_autocorrelation(x - x.mean(axis=0), max_lag)
        if shape_r.any():  # all bands moving in lockstep leave no shape to correlate
            r = (1.0 - cfg.shape_weight) * r + cfg.shape_weight * shape_r
    return r, env_rate, min_lag, max_lag


def estimate_rr_dsp(
    audio: np.ndarray, sample_rate: int = SAMPLE_RATE, cfg: DspConfig = DEFAULT_CONFIG
) -> DspEstimate:
    """Respiratory rate of mono audio (at least 4 s) by envelope autocorrelation; see the module doc.

    Raises ``ValueError`` for audio that is not 1-D, holds NaN/inf, or is shorter than 3.5 s.
    """
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {x.shape}")
    duration_s = len(x) / sample_rate
    if duration_s < MIN_DURATION_S:
        raise ValueError(f"audio is {duration_s:.2f} s long; the DSP baseline needs at least 4 s")
    if not np.isfinite(x).all():
        raise ValueError("audio holds NaN or infinite samples")
    r, env_rate, min_lag, _ = combined_autocorrelation(x, sample_rate, cfg)
    if not r.any():
        return DspEstimate(math.nan, 0.0)
    lag, height = pick_period(r, min_lag, cfg)
    return DspEstimate(float(60.0 * env_rate / lag), float(np.clip(height, 0.0, 1.0)))


def pick_period(r: np.ndarray, min_lag: int, cfg: DspConfig = DEFAULT_CONFIG) -> tuple[float, float]:
    """The breathing period in an autocorrelation ``r[0..max_lag]``: ``(lag, height)``.

    The strongest local maximum at lags ``min_lag..max_lag`` (or the best end point when there is
    none), corrected by the octave check and refined by parabolic interpolation (steps 4-5 of the
    module docstring). Shared with :mod:`training.estimator`, which mixes other autocorrelations in.
    """
    max_lag = len(r) - 1
    lags = np.arange(max(min_lag, 1), max_lag)
    peaks = lags[(r[lags] >= r[lags - 1]) & (r[lags] > r[lags + 1])]
    if peaks.size == 0:  # no local maximum in range: the best end point, with what confidence it has
        best = min_lag + int(np.argmax(r[min_lag : max_lag + 1]))
    else:
        best = int(peaks[np.argmax(r[peaks])])
    best = _resolve_octave(r, best, min_lag, cfg)
    return _parabolic(r, best)


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


def _peak_near(r: np.ndarray, lag: float, tolerance: float = 0.15) -> float:
    """Highest autocorrelation within ``lag * (1 +/- tolerance)``; ``nan`` if that runs out of range."""
    lo, hi = math.floor(lag * (1 - tolerance)), math.ceil(lag * (1 + tolerance))
    return float(r[lo : hi + 1].max()) if hi < len(r) else math.nan


def _local_peak(r: np.ndarray, lag: float, min_lag: int, tolerance: float = 0.15) -> int | None:
    """Index of the highest value within ``lag * (1 +/- tolerance)`` if it is a local maximum."""
    lo = max(math.floor(lag * (1 - tolerance)), min_lag, 1)
    hi = min(math.ceil(lag * (1 + tolerance)), len(r) - 2)
    if hi < lo:
        return None
    i = lo + int(np.argmax(r[lo : hi + 1]))
    return i if r[i] >= r[i - 1] and r[i] >= r[i + 1] else None


def _resolve_octave(r: np.ndarray, best: int, min_lag: int, cfg: DspConfig) -> int:
    """Halve or double the best lag when its multiples say it is twice or half the period.

    If ``P / 2`` is the period, the odd multiples of ``P / 2`` (``P / 2, 3 P / 2``) correlate as well
    as the even ones (``P, 2 P``); if only ``P`` is (inhale unlike exhale), the odd ones are weaker.
    Both sides average the same number of multiples (two where ``2 P`` is in range, else one), so the
    decay of the autocorrelation with lag favours neither by much.
    """

    def mean_at(lags: list[float], count: int) -> float:
        return float(np.mean([_peak_near(r, lag) for lag in lags[:count]]))

    for _ in range(2):  # a quarter at most
        half = _local_peak(r, best / 2, min_lag)
        if half is None:
            break
        count = 2 if 2 * best * 1.15 < len(r) else 1
        if mean_at([half, 3 * half], count) >= mean_at([best, 2 * best], count) - cfg.halve_margin:
            best = half
        else:
            break
    double = _local_peak(r, 2 * best, min_lag)
    if double is not None:
        count = 2 if 4 * best * 1.15 < len(r) else 1
        if mean_at([double, 4 * best], count) > mean_at([best, 3 * best], count) + cfg.double_margin:
            best = double
    return best


def dsp_run(
    segments: Sequence[Segment],
    corpus_dir: Path | str,
    split: str = "test",
    name: str = "DSP baseline",
    cfg: DspConfig = DEFAULT_CONFIG,
) -> RunPredictions:
    """Run the estimator on the manifest segments of ``split``; returns report-ready predictions.

    Each segment is estimated on its own audio. Each recording (segments sharing a ``recording`` id,
    all in one file) is also estimated once on its whole span, from its first segment's start to its
    last one's end: that is how a classical estimator would be used on a recording, and the report
    uses it at recording level instead of a median of 4-7 s windows that cannot see slow periods.
    Each file is loaded once (16 kHz). A segment whose audio cannot be used (unreadable file, shorter
    than 3.5 s) gets ``rr_pred_bpm = nan``; the report counts it as missing.
    """
    from training.audio import AudioError, load_audio
    from training.manifest import audio_path
    from training.report import PredictionRow, RunPredictions

    chosen = [s for s in segments if s.split == split]
    spans: dict[str, tuple[Path, float, float]] = {}
    for seg in chosen:
        if seg.recording:
            path, start_s, end_s = spans.get(
                seg.recording, (audio_path(corpus_dir, seg), seg.start_s, seg.end_s)
            )
            spans[seg.recording] = (path, min(start_s, seg.start_s), max(end_s, seg.end_s))
    mixed = {
        s.recording for s in chosen if s.recording and audio_path(corpus_dir, s) != spans[s.recording][0]
    }

    audio_of: dict[Path, np.ndarray | None] = {}

    def estimate(path: Path, start_s: float, end_s: float) -> float:
        nonlocal audio_of
        if path not in audio_of:
            try:
                audio_of = {path: load_audio(path)}  # one file at a time: its segments are adjacent
            except AudioError:
                audio_of = {path: None}
        audio = audio_of[path]
        if audio is None:
            return math.nan
        piece = audio[round(start_s * SAMPLE_RATE) : round(end_s * SAMPLE_RATE)]
        if len(piece) < MIN_DURATION_S * SAMPLE_RATE:
            return math.nan
        return estimate_rr_dsp(piece, SAMPLE_RATE, cfg).rr_bpm

    rows = []
    whole: dict[str, float] = {}
    for seg in chosen:
        path = audio_path(corpus_dir, seg)
        rows.append(PredictionRow.from_segment(seg, rr_pred_bpm=estimate(path, seg.start_s, seg.end_s)))
        if seg.recording and seg.recording not in whole and seg.recording not in mixed:
            whole[seg.recording] = estimate(*spans[seg.recording])
    return RunPredictions(
        name=name,
        model_type="dsp",
        units=None,
        augmented=False,
        split=split,
        rows=rows,
        recording_rr_pred_bpm=whole,
    )
