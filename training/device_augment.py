"""Make clean training audio sound like what real devices deliver: level, band, gain control, gate, clip.

Synthetic breath is generated at a nominal level and full 8 kHz bandwidth. Real microphones differ in
ways that have nothing to do with breathing, and a model trained on one kind learns the kind:

- **level**: distance and gain move everything by -40..0 dB;
- **band limits**: devices record at 2-48 kHz; RRuJO's stethoscopes at 2, 4.5 and 8 kHz hold nothing
  above 1-4 kHz, Bluetooth headsets often 8 kHz (nothing above 4 kHz);
- **automatic gain control (AGC)**: phones and headsets raise quiet stretches and lower loud ones
  within a second or two, flattening the loudness contrast between a breath and the pause after it;
- **noise gate**: many headsets output digital silence when the input stays under a threshold, so
  the pause between breaths is exactly zero;
- **clipping**: a hard breath into a close microphone saturates.

:func:`simulate_device` applies a random subset with random settings. It never moves audio in time
(band limiting resamples with soxr's linear-phase filter, whose delay soxr compensates), so frame
labels computed from the clean signal stay valid.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import signal

from training.audio import resample
from training.frontend import SAMPLE_RATE_HZ

NATIVE_RATES_HZ = (2000, 4000, 4500, 8000, 11025)


@dataclasses.dataclass(frozen=True)
class DeviceAugmentConfig:
    gain_db: tuple[float, float] = (-40.0, 0.0)
    band_limit_prob: float = 0.5
    agc_prob: float = 0.3
    gate_prob: float = 0.25
    clip_prob: float = 0.15


DEFAULT_DEVICE_AUGMENT = DeviceAugmentConfig()


def band_limit(audio: np.ndarray, native_rate_hz: int, sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """As if recorded at ``native_rate_hz`` and resampled to ``sample_rate`` (nothing above its Nyquist)."""
    down = resample(audio, sample_rate, native_rate_hz)
    up = resample(down, native_rate_hz, sample_rate)
    out = np.zeros_like(audio)
    out[: min(len(up), len(audio))] = up[: len(audio)]
    return out


def _envelope_rms(audio: np.ndarray, sample_rate: int, smooth_s: float) -> np.ndarray:
    """RMS envelope smoothed by a one-pole filter with time constant ``smooth_s`` (forward only)."""
    a = 1.0 / (smooth_s * sample_rate)
    power = signal.lfilter([a], [1.0, -(1.0 - a)], audio.astype(np.float64) ** 2)
    return np.sqrt(np.maximum(power, 1e-20))


def agc(audio: np.ndarray, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Automatic gain control: gain = (target / envelope) ** strength, envelope over 0.5-2 s."""
    smooth_s = float(rng.uniform(0.5, 2.0))
    strength = float(rng.uniform(0.5, 0.9))
    env = _envelope_rms(audio, sample_rate, smooth_s)
    target = float(np.median(env))
    gain = np.clip((target / env) ** strength, 0.1, 30.0)
    return (audio * gain).astype(np.float32)


def noise_gate(audio: np.ndarray, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Digital silence wherever the 20 ms envelope stays under a threshold (30-60th percentile)."""
    env = _envelope_rms(audio, sample_rate, 0.02)
    threshold = np.percentile(env, rng.uniform(30, 60))
    open_ = env > threshold
    # hold the gate open 50 ms after the level drops, as gates do (no chatter inside a breath)
    hold = round(0.05 * sample_rate)
    open_ = np.convolve(open_.astype(np.float32), np.ones(hold, np.float32), mode="full")[: len(audio)] > 0
    return np.where(open_, audio, 0.0).astype(np.float32)


def clip(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hard clipping at the 99-99.9th percentile of the absolute level."""
    level = float(np.percentile(np.abs(audio), rng.uniform(99.0, 99.9)))
    return np.clip(audio, -level, level).astype(np.float32) if level > 0 else audio


def simulate_device(
    audio: np.ndarray,
    rng: np.random.Generator,
    cfg: DeviceAugmentConfig = DEFAULT_DEVICE_AUGMENT,
    sample_rate: int = SAMPLE_RATE_HZ,
) -> np.ndarray:
    """``audio`` as a random real device might deliver it (same length, same timing)."""
    x = np.asarray(audio, dtype=np.float32)
    if rng.random() < cfg.band_limit_prob:
        x = band_limit(x, int(rng.choice(NATIVE_RATES_HZ)), sample_rate)
    if rng.random() < cfg.agc_prob:
        x = agc(x, rng, sample_rate)
    if rng.random() < cfg.gate_prob:
        x = noise_gate(x, rng, sample_rate)
    if rng.random() < cfg.clip_prob:
        x = clip(x, rng)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    gain = 10 ** (rng.uniform(*cfg.gain_db) / 20)
    if peak * gain > 0.99:
        gain = 0.99 / peak
    return (x * gain).astype(np.float32)
