"""The audio front-end, defined once: 40 log mel-filterbank energies, 0-7500 Hz, at 16 kHz.

Every consumer (training, evaluation, estimation, the Core ML graph, the streaming app) derives its
features from :class:`FrontEndConfig` and :class:`LogMel`, so a change here changes them all together
and a checkpoint records exactly which front-end it was trained with.

Framing: 25 ms Hann window (periodic, 400 samples), 10 ms hop (160 samples), no centre padding, so a
signal of ``n`` samples gives ``1 + (n - 400) // 160`` frames and frame ``t`` covers samples
``[160 t, 160 t + 400)``. Energies are the power spectrum (|X|^2 of the 400-point DFT) projected on a
Slaney-normalised mel filterbank (librosa's default), and the features are ``log(energy + LOG_FLOOR)``
with the natural log. The floor (1e-6) keeps digital silence finite (log 1e-6 = -13.8) and keeps float32
round-off of near-silent frames from turning into large log differences.

This module is the definition (parameters, filterbank, window, DFT kernels) and needs only numpy, so
the numpy-only parts (audio I/O, the generator, the DSP baseline) take the sample rate from here without
importing torch. :mod:`training.logmel` computes the features with torch, in two ways:
- ``method="fft"``: ``torch.fft.rfft``; fast, used offline (training, estimation, benchmarks).
- ``method="dft"``: the DFT as a strided convolution with fixed cosine/sine kernels; it only uses ops
  that Core ML has (conv, mul, add, matmul, log), so it is the form traced into the ``.mlpackage``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

SAMPLE_RATE_HZ = 16_000  # of all audio inside Respira: files are resampled to it on load
LOG_FLOOR = 1e-6


@dataclasses.dataclass(frozen=True)
class FrontEndConfig:
    """Front-end parameters; stored in checkpoints and in package metadata, compared on load."""

    sample_rate: int = SAMPLE_RATE_HZ
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    fmin_hz: float = 0.0
    fmax_hz: float = 7_500.0
    log_floor: float = LOG_FLOOR
    window: str = "hann"
    mel_norm: str = "slaney"
    htk: bool = False
    center: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> FrontEndConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def mismatches(self, other: FrontEndConfig) -> list[str]:
        """Names and values of the parameters that differ, for a clear refusal message."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: {mine[k]!r} != {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]

    def num_frames(self, num_samples: int) -> int:
        """Frames the whole-signal call yields for ``num_samples`` samples (0 if shorter than a window)."""
        if num_samples < self.win_length:
            return 0
        return 1 + (num_samples - self.win_length) // self.hop_length

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


DEFAULT_FRONTEND = FrontEndConfig()


class FrontEndMismatchError(ValueError):
    """A checkpoint or package was made with front-end parameters other than the expected ones."""


def check_frontend(expected: FrontEndConfig, found: dict | FrontEndConfig, what: str) -> None:
    """Refuse ``found`` (from a checkpoint or package named by ``what``) unless it equals ``expected``."""
    found_cfg = found if isinstance(found, FrontEndConfig) else FrontEndConfig.from_dict(found)
    diff = expected.mismatches(found_cfg)
    if diff:
        raise FrontEndMismatchError(f"{what} was made with other front-end parameters: " + "; ".join(diff))


def hz_to_mel(freqs_hz: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """Hz to mels: HTK's formula, or Slaney's (linear below 1 kHz, logarithmic above), as librosa."""
    f = np.asarray(freqs_hz, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    mels = f / _SLANEY_HZ_PER_MEL
    log_part = f >= _SLANEY_LOG_HZ
    return np.where(
        log_part,
        _SLANEY_LOG_HZ / _SLANEY_HZ_PER_MEL
        + np.log(np.maximum(f, 1e-30) / _SLANEY_LOG_HZ) / _SLANEY_LOG_STEP,
        mels,
    )


def mel_to_hz(mels: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """The inverse of :func:`hz_to_mel`."""
    m = np.asarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    min_log_mel = _SLANEY_LOG_HZ / _SLANEY_HZ_PER_MEL
    return np.where(
        m >= min_log_mel,
        _SLANEY_LOG_HZ * np.exp(_SLANEY_LOG_STEP * (m - min_log_mel)),
        _SLANEY_HZ_PER_MEL * m,
    )


_SLANEY_HZ_PER_MEL = 200.0 / 3
_SLANEY_LOG_HZ = 1000.0
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def mel_frequencies(n: int, fmin_hz: float, fmax_hz: float, htk: bool = False) -> np.ndarray:
    """``n`` frequencies evenly spaced on the mel scale from ``fmin_hz`` to ``fmax_hz``."""
    lo, hi = hz_to_mel(fmin_hz, htk), hz_to_mel(fmax_hz, htk)
    return mel_to_hz(np.linspace(lo, hi, n), htk)


def mel_matrix(cfg: FrontEndConfig = DEFAULT_FRONTEND) -> np.ndarray:
    """The [n_mels, n_fft // 2 + 1] filterbank: librosa's ``filters.mel``, reproduced bit for bit.

    Why not call librosa: importing it costs about 1.6 CPU-s (it pulls in scipy.signal and numba),
    more than estimating a minute of audio, in every ``python -m training.estimate`` process. The
    test suite compares this with librosa's for several front-ends (``np.array_equal``).
    """
    if cfg.mel_norm not in ("slaney", None):
        raise ValueError(f"mel_norm must be 'slaney' or None, not {cfg.mel_norm!r}")
    fft_freqs = np.fft.rfftfreq(cfg.n_fft, 1.0 / cfg.sample_rate)
    mel_f = mel_frequencies(cfg.n_mels + 2, cfg.fmin_hz, cfg.fmax_hz, cfg.htk)
    spacing = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((cfg.n_mels, len(fft_freqs)), dtype=np.float32)
    for i in range(cfg.n_mels):
        rising = -ramps[i] / spacing[i]
        falling = ramps[i + 2] / spacing[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(rising, falling))
    if cfg.mel_norm == "slaney":  # equal area per band
        weights *= (2.0 / (mel_f[2 : cfg.n_mels + 2] - mel_f[: cfg.n_mels]))[:, None]
    return weights


def hann_window(cfg: FrontEndConfig = DEFAULT_FRONTEND) -> np.ndarray:
    """Periodic Hann window of ``win_length`` zero-padded (centred) to ``n_fft``, as librosa does."""
    n = np.arange(cfg.win_length)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / cfg.win_length)
    pad_left = (cfg.n_fft - cfg.win_length) // 2
    return np.pad(window, (pad_left, cfg.n_fft - cfg.win_length - pad_left)).astype(np.float32)
