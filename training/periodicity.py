"""The estimator's window arithmetic, written once in torch for the offline estimator and the package.

:mod:`training.estimator` calls these functions on windows cut from a whole recording; the Core ML
package (:mod:`coreml.streaming`) traces the same functions over ring buffers of its states, so the
rolling rate the iPhone reads is, operation for operation, the one the evaluation measured. That is
why everything here works on fixed-size tensors with a *valid count* instead of Python slicing and
branching: a window that is not full yet (the first 30 s of a stream) sits at the end of its buffer,
the part before it is masked out, and every result equals the one computed on the valid part alone
(autocorrelations of zero-padded signals are unchanged, means divide by the valid count). Branches
are :func:`torch.where`, so a traced graph keeps them.

The window's evidence (module doc of :mod:`training.estimator`, steps 1-2):

- **Activity**: the mean of ``p(inhale) + p(exhale)`` over the window's model steps (20 per second).
- **Phase autocorrelation**: of ``p(inhale) - p(exhale)`` minus its mean, biased, normalised.
- **DSP autocorrelation**: the DSP baseline's method (:mod:`training.dsp_baseline`) on the window's
  band powers, with two definitions that a stream can hold: the log floor is ``1e-6`` times the
  loudest band's *mean* power over the window (the baseline takes the median over the whole
  recording, which a stream cannot know), and the envelopes, low-passed at 1 Hz, are read every other
  frame (20 Hz, the model's step grid) so that both autocorrelations share one lag grid without
  interpolation.

Then :func:`decide` mixes them and picks the period (steps 2-3), for a batch of windows at once (the
calibration grid scores hundreds of settings over every validation recording).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from training.dsp_baseline import DEFAULT_CONFIG as DSP_CONFIG
from training.dsp_baseline import DspConfig, lowpass_kernel

STEPS_PER_SECOND = 20.0  # the model's LSTM steps; the lag grid of both autocorrelations
DSP_DECIMATION = 2  # envelopes at 40 Hz, read every other frame -> 20 Hz
MIN_RATE_BPM = 4.0
MAX_RATE_BPM = 60.0
MIN_LAG = math.floor(STEPS_PER_SECOND * 60.0 / MAX_RATE_BPM)  # 1 s: the fastest breathing looked for
MAX_LAG = math.ceil(DSP_CONFIG.lag_slack * STEPS_PER_SECOND * 60.0 / MIN_RATE_BPM)  # 16.5 s
LOG_POWER_EPS = 1e-10  # added before the log of a band's power: digital silence stays finite
FLOOR_SHARE = 1e-6  # the log floor, as a share of the loudest band's mean power in the window
ACTIVITY_FULL = 0.5
# A band whose detrended log power varies by less than this (nepers, rms) is flat: no energy in it (above
# a stethoscope's Nyquist rate), so all it holds is the log floor plus float32 round-off. The DSP
# baseline's 1e-6 sits at that round-off for float32 sums, and two computations then disagree on whether
# the band counts (measured: the package and torch differed on 4.5 kHz recordings); breathing moves a
# band's log power by tenths of a neper.
FLAT_BAND_STD = 1e-3  # confidence is scaled by activity / ACTIVITY_FULL, capped at 1

# reason codes, as the package outputs them (a float tensor cannot hold a string)
RATE, NO_BREATHING, TOO_NOISY, WARMING_UP = 0, 1, 2, 3
REASON_NAMES = {NO_BREATHING: "no_breathing", TOO_NOISY: "too_noisy", WARMING_UP: "warming_up"}


def _valid_mask(length: int, valid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """1.0 for the last ``valid`` of ``length`` positions, 0.0 before them: ``[batch, length]``."""
    index = _arange(length)
    return (index[None, :] >= (float(length) - valid.to(like.dtype))[:, None]).to(like.dtype)


def _arange(n: int) -> torch.Tensor:
    """``0..n-1`` as a constant: built by numpy, so a traced graph holds it as a constant rather
    than as arithmetic on tensor shapes (which the Core ML converter cannot always fold)."""
    return torch.from_numpy(np.arange(int(n), dtype=np.float32))


def lagged_products(x: torch.Tensor, max_lag: int) -> torch.Tensor:
    """``out[..., k] = sum_t x[..., t] * x[..., t + k]`` for ``k = 0..max_lag`` (zero beyond the end).

    One grouped convolution of each zero-padded row with itself: exact direct sums, eagerly and in the
    package alike (Core ML's ``conv`` takes a weight computed in the graph when it is not dilated),
    so offline and streaming add the same products. For a 30 s window that is 331 x 600 products per
    row, 3.4 M multiply-adds for the 17 rows a window correlates.
    """
    if x.dim() == 2:  # [batch, time]: one row per window
        return lagged_products(x[:, None, :], max_lag)[:, 0, :]
    windows = []
    for b in range(x.shape[0]):  # [batch, rows, time]; the package has one window (batch 1)
        rows = x[b : b + 1]  # [1, rows, time]
        padded = F.pad(rows, (0, max_lag))
        windows.append(F.conv1d(padded, rows.transpose(0, 1), groups=rows.shape[1]))
    return windows[0] if len(windows) == 1 else torch.cat(windows, 0)


def band_log_power_to_envelopes(
    log_power: torch.Tensor, mask: torch.Tensor, count: torch.Tensor
) -> torch.Tensor:
    """``log(P + floor)`` per band with the window's floor (module doc); ``log_power`` is
    ``log(P + LOG_POWER_EPS)`` ``[batch, bands, frames]``, ``mask`` its valid frames."""
    power = torch.exp(log_power) * mask[:, None, :]
    loudest = (power.sum(-1) / count[:, None]).amax(-1)  # [batch]
    floor = FLOOR_SHARE * torch.clamp(loudest, min=1e-30)
    return torch.log(power + floor[:, None, None])


def dsp_autocorrelation(log_power: torch.Tensor, valid_frames: torch.Tensor) -> torch.Tensor:
    """The DSP's autocorrelation on the 20 Hz lag grid ``[batch, MAX_LAG + 1]`` from band log powers
    ``[batch, bands, frames]`` at 40 Hz whose last ``valid_frames`` are the window (an even number of
    frames before them). All zeros when no band varies."""
    _, bands, frames = log_power.shape
    dtype = log_power.dtype
    mask = _valid_mask(frames, valid_frames, log_power)  # [batch, frames]
    count = torch.clamp(valid_frames.to(dtype), min=1.0)
    env = band_log_power_to_envelopes(log_power, mask, count)
    # detrend over the valid frames (least-squares line), zero outside them
    t = _arange(frames)[None, :]
    t_centred = (t - (t * mask).sum(-1, keepdim=True) / count[:, None]) * mask
    centred = (env - (env * mask[:, None, :]).sum(-1, keepdim=True) / count[:, None, None]) * mask[:, None, :]
    t_energy = torch.clamp((t_centred * t_centred).sum(-1), min=1e-30)
    slope = (centred * t_centred[:, None, :]).sum(-1) / t_energy[:, None]
    x = (centred - slope[..., None] * t_centred[:, None, :]) * mask[:, None, :]
    flat_ok = torch.sqrt((x * x).sum(-1) / count[:, None]) >= FLAT_BAND_STD  # an empty band, or silence
    x = x * flat_ok[..., None].to(dtype)
    # low-pass at 1 Hz, read every other frame (a 'same' convolution evaluated at even frames)
    kernel = lowpass_kernel(DSP_CONFIG.lowpass_hz, 1.0 / DSP_CONFIG.hop_s)[::-1].astype(np.float32)
    half = (len(kernel) - 1) // 2
    weight = torch.from_numpy(np.tile(kernel, (int(bands), 1, 1)))  # one filter per band
    y = F.conv1d(x, weight, stride=DSP_DECIMATION, padding=half, groups=int(bands))
    steps = y.shape[-1]
    valid_steps = dsp_steps(valid_frames)
    mask2 = _valid_mask(steps, valid_steps, y)[:, None, :]
    count2 = torch.clamp(valid_steps.to(dtype), min=1.0)[:, None]
    y = y * mask2
    mean = y.sum(-1) / count2
    std = torch.sqrt((((y - mean[..., None]) * mask2) ** 2).sum(-1) / count2)
    ok = torch.logical_and(flat_ok, std > 1e-9)
    okf = ok.to(dtype)
    z = y / torch.where(ok, std, torch.ones_like(std))[..., None] * okf[..., None]
    max_lag = window_max_lag(valid_steps)
    lag_ok = (_arange(MAX_LAG + 1)[None, :] <= max_lag[:, None]).to(dtype)
    loud = _normalised(lagged_products(z, MAX_LAG), okf)  # [batch, bands, lags]
    # loudness: bands weighted by how periodic each is (highest peak from MIN_LAG, squared)
    peak = (loud[..., MIN_LAG:] + (lag_ok[:, None, MIN_LAG:] - 1.0) * 1e9).amax(-1)
    weight = torch.clamp(peak, min=0.0) ** 2 * okf
    n_ok = okf.sum(-1)
    weighted = (weight[..., None] * loud).sum(1) / torch.clamp(weight.sum(-1), min=1e-30)[:, None]
    plain = loud.sum(1) / torch.clamp(n_ok, min=1.0)[:, None]
    r = torch.where((weight.sum(-1) > 0)[:, None], weighted, plain)
    # spectral shape: the envelopes minus their mean over the bands that vary
    shape = (
        (z - (z.sum(1, keepdim=True) / torch.clamp(n_ok, min=1.0)[:, None, None])) * okf[..., None] * mask2
    )
    shape_std = torch.sqrt(
        (((shape - shape.sum(-1, keepdim=True) / count2[..., None]) * mask2) ** 2).sum(-1) / count2
    )
    varying = (shape_std > 1e-9).to(dtype)
    shape_r = (
        _normalised(lagged_products(shape, MAX_LAG), varying).sum(1)
        / torch.clamp(varying.sum(-1), min=1.0)[:, None]
    )
    use_shape = torch.logical_and(n_ok >= 2, varying.sum(-1) > 0)
    w = DSP_CONFIG.shape_weight
    r = torch.where(use_shape[:, None], (1.0 - w) * r + w * shape_r, r)
    return r * lag_ok


def _normalised(products: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Lagged products divided by the zero-lag one (rows not kept, or with no energy: zeros)."""
    energy = products[..., :1]
    safe = torch.where(energy > 0, energy, torch.ones_like(energy))
    return products / safe * keep[..., None] * (energy > 0).to(products.dtype)


def dsp_steps(valid_frames: torch.Tensor) -> torch.Tensor:
    """How many 20 Hz envelope values a window of ``valid_frames`` 40 Hz frames gives."""
    return torch.div(valid_frames + DSP_DECIMATION - 1, DSP_DECIMATION, rounding_mode="floor")


def window_max_lag(valid_steps: torch.Tensor) -> torch.Tensor:
    """Longest lag trusted in a window of ``valid_steps`` steps: 75 % of it, at most :data:`MAX_LAG`."""
    return torch.clamp(torch.floor(DSP_CONFIG.max_lag_fraction * valid_steps.to(torch.float32)), max=MAX_LAG)


def phase_autocorrelation(
    phase: torch.Tensor, valid_steps: torch.Tensor, max_lag: torch.Tensor
) -> torch.Tensor:
    """Biased, normalised autocorrelation of the phase signal ``[batch, steps]`` (last ``valid_steps``
    valid) minus its mean, on lags ``0..MAX_LAG``, zero beyond ``max_lag``."""
    mask = _valid_mask(phase.shape[-1], valid_steps, phase)
    count = torch.clamp(valid_steps.to(phase.dtype), min=1.0)
    x = (phase - (phase * mask).sum(-1, keepdim=True) / count[:, None]) * mask
    products = lagged_products(x, MAX_LAG)
    r = _normalised(products, (products[..., 0] > 1e-12).to(phase.dtype))
    lag_ok = _arange(MAX_LAG + 1)[None, :] <= max_lag[:, None]
    return r * lag_ok.to(phase.dtype)


def activity(activity_track: torch.Tensor, valid_steps: torch.Tensor) -> torch.Tensor:
    mask = _valid_mask(activity_track.shape[-1], valid_steps, activity_track)
    return (activity_track * mask).sum(-1) / torch.clamp(valid_steps.to(activity_track.dtype), min=1.0)


@dataclasses.dataclass
class Evidence:
    """A batch of windows' evidence: both autocorrelations on one lag grid, activity, longest lag."""

    r_learned: torch.Tensor  # [batch, MAX_LAG + 1]
    r_dsp: torch.Tensor  # [batch, MAX_LAG + 1]
    activity: torch.Tensor  # [batch]
    max_lag: torch.Tensor  # [batch], float


def evidence(
    phase: torch.Tensor,
    activity_track: torch.Tensor,
    valid_steps: torch.Tensor,
    log_power: torch.Tensor,
    valid_frames: torch.Tensor,
) -> Evidence:
    """Everything a window offers to decide on (module doc). Both autocorrelations end at the lag
    the DSP's 20 Hz envelopes allow (75 % of them), as the DSP baseline's own does."""
    max_lag = window_max_lag(dsp_steps(valid_frames))
    return Evidence(
        phase_autocorrelation(phase, valid_steps, max_lag),
        dsp_autocorrelation(log_power, valid_frames),
        activity(activity_track, valid_steps),
        max_lag,
    )


# -- the decision: mix, period, answer ---------------------------------------------------------------


def _all_of(*conditions: torch.Tensor) -> torch.Tensor:
    """Elementwise AND (``torch.logical_and``: the Core ML converter has no ``&`` for every case)."""
    out = conditions[0]
    for c in conditions[1:]:
        out = torch.logical_and(out, c)
    return out


def _any_of(*conditions: torch.Tensor) -> torch.Tensor:
    out = conditions[0]
    for c in conditions[1:]:
        out = torch.logical_or(out, c)
    return out


def _masked_max(r: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Highest value of each row of ``r`` ``[batch, lags]`` over lags ``lo..hi`` (inclusive) and its first
    index, for ``K`` ranges at once: ``lo`` and ``hi`` are ``[batch, K]``, the results ``[batch, K]``.
    One broadcast mask for every range keeps the traced graph short (each op is a call in the package)."""
    lags = _arange(r.shape[-1])[None, None, :]
    inside = torch.logical_and(lags >= lo[..., None], lags <= hi[..., None])
    masked = torch.where(inside, r[:, None, :], torch.full_like(inside, -1e9, dtype=r.dtype))
    return masked.amax(-1), torch.argmax(masked, -1).to(r.dtype)


def _at(r: torch.Tensor, lag: torch.Tensor) -> torch.Tensor:
    """``r`` at lags ``[batch, K]`` (clamped into the row): ``[batch, K]``."""
    index = torch.clamp(lag, 0, MAX_LAG).to(torch.int64)  # every r here has MAX_LAG + 1 lags
    return torch.gather(r, 1, index)


def _around(r: torch.Tensor, lag: torch.Tensor) -> torch.Tensor:
    """``r`` at ``lag - 1``, ``lag`` and ``lag + 1`` ``[batch, 3]`` for lags ``[batch]``."""
    return _at(r, lag[:, None] + torch.tensor([[-1.0, 0.0, 1.0]], dtype=lag.dtype))


def _peaks_near(
    r: torch.Tensor, num: torch.Tensor, max_lag: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Highest value within ``num * (1 +/- 0.15)`` and whether that range lies inside the window, for
    ``[batch, K]`` lags ``num`` at once. Bounds in integer arithmetic (17/20, 23/20), so float rounding
    cannot move them."""
    lo = torch.floor(17.0 * num / 20.0)
    hi = torch.ceil(23.0 * num / 20.0)
    value, _ = _masked_max(r, lo, hi)
    return value, hi <= max_lag[:, None]


def _local_peak(
    r: torch.Tensor, num: torch.Tensor, den: float, max_lag: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the highest value within ``num/den * (1 +/- 0.15)`` (from MIN_LAG) and whether it is
    a local maximum with a range that exists; ``[batch]``."""
    lo = torch.clamp(torch.floor(17.0 * num / (20.0 * den)), min=float(max(MIN_LAG, 1)))
    hi = torch.minimum(torch.ceil(23.0 * num / (20.0 * den)), max_lag - 1.0)
    _, index = _masked_max(r, lo[:, None], hi[:, None])
    index = index[:, 0]
    before, here, after = _around(r, index).unbind(1)
    ok = _all_of(hi >= lo, here >= before, here >= after)
    return index, ok


def _mean_of_pairs(
    r: torch.Tensor, lags: torch.Tensor, count2: torch.Tensor, max_lag: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For lags ``[batch, 4]`` read as two pairs: per pair the mean of the peaks near its two lags (the
    first alone where not ``count2``) and whether the ranges it needs lie in the window: ``[batch, 2]``."""
    value, ok = _peaks_near(r, lags, max_lag)
    first, second = value[:, 0::2], value[:, 1::2]
    ok_first, ok_second = ok[:, 0::2], ok[:, 1::2]
    both = count2[:, None]
    mean = torch.where(both, 0.5 * (first + second), first)
    return mean, torch.logical_and(ok_first, torch.logical_or(ok_second, torch.logical_not(both)))


def pick_period(r: torch.Tensor, max_lag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The breathing period in autocorrelations ``r`` ``[batch, lags]`` valid up to ``max_lag``:
    ``(lag, height)`` per row; :func:`training.dsp_baseline.pick_period` as tensor operations (the
    strongest peak, the octave check, parabolic refinement)."""
    lags = _arange(r.shape[-1])[None, :]
    prev = F.pad(r, (1, 0))[:, :-1]
    nxt = F.pad(r, (0, 1))[:, 1:]
    is_peak = _all_of(lags >= max(MIN_LAG, 1), lags <= max_lag[:, None] - 1.0, r >= prev, r > nxt)
    any_peak = is_peak.any(-1)
    # the strongest peak, else the highest value from MIN_LAG: both ranges in one masked max
    candidates = torch.stack([torch.where(is_peak, r, torch.full_like(r, -1e9)), r], 1)  # [batch, 2, lags]
    lo = torch.stack([torch.zeros_like(max_lag), torch.full_like(max_lag, float(MIN_LAG))], 1)
    inside = torch.logical_and(lags[:, None, :] >= lo[..., None], lags[:, None, :] <= max_lag[:, None, None])
    first = torch.argmax(torch.where(inside, candidates, torch.full_like(candidates, -1e9)), -1).to(r.dtype)
    best = torch.where(any_peak, first[:, 0], first[:, 1])
    length = max_lag + 1.0
    margin_half, margin_double = DSP_CONFIG.halve_margin, DSP_CONFIG.double_margin
    active = best >= 0.0  # all true
    for _ in range(2):  # halve at most twice
        half, half_ok = _local_peak(r, best, 2.0, max_lag)
        count2 = 23.0 * best < 10.0 * length  # 2 * best * 1.15 < len(r)
        # (odd, even): the peaks near half and 3 * half against those near best and 2 * best
        mean, ok = _mean_of_pairs(r, torch.stack([half, 3.0 * half, best, 2.0 * best], 1), count2, max_lag)
        odd, even = mean.unbind(1)
        take = _all_of(active, half_ok, ok[:, 0], ok[:, 1], odd >= even - margin_half)
        best = torch.where(take, half, best)
        active = take
    double, double_ok = _local_peak(r, 2.0 * best, 1.0, max_lag)
    count2 = 46.0 * best < 10.0 * length  # 4 * best * 1.15 < len(r)
    mean, ok = _mean_of_pairs(r, torch.stack([double, 4.0 * best, best, 3.0 * best], 1), count2, max_lag)
    even, odd = mean.unbind(1)
    take = _all_of(double_ok, ok[:, 0], ok[:, 1], even > odd + margin_double)
    best = torch.where(take, double, best)
    # parabolic refinement
    a, b, c = _around(r, best).unbind(1)
    one = torch.ones_like(best)
    denom = a - 2.0 * b + c
    interior = _all_of(best > 0, best < max_lag, denom < 0)
    shift = torch.where(interior, 0.5 * (a - c) / torch.where(interior, denom, -one), torch.zeros_like(a))
    return best + shift, torch.where(interior, b - 0.25 * (a - c) * shift, b)


@dataclasses.dataclass
class Decision:
    rr_bpm: torch.Tensor  # [batch]; 0 where there is no rate (see reason)
    rr_confidence: torch.Tensor  # [batch] in [0, 1]
    reason: torch.Tensor  # [batch] RATE, NO_BREATHING or TOO_NOISY
    activity: torch.Tensor  # [batch]


def mix(ev: Evidence, learned_weight: torch.Tensor, adaptive: torch.Tensor) -> torch.Tensor:
    """``a * learned + (1 - a) * dsp`` per window: ``a = learned_weight``, or with ``adaptive`` the prior
    scaled by each side's periodicity (its highest peak at lags MIN_LAG..max_lag, squared)."""
    dtype = ev.r_learned.dtype
    lags = _arange(ev.r_learned.shape[-1])[None, :]
    usable = _all_of(lags >= MIN_LAG, lags <= ev.max_lag[:, None])

    def periodicity(r: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.where(usable, r, torch.full_like(r, -1e9)).amax(-1), min=0.0) ** 2

    p_learned, p_dsp = periodicity(ev.r_learned), periodicity(ev.r_dsp)
    total = learned_weight * p_learned + (1.0 - learned_weight) * p_dsp
    interior = _all_of(adaptive, learned_weight > 0, learned_weight < 1, total > 0)
    share = torch.where(
        interior,
        learned_weight * p_learned / torch.where(total > 0, total, torch.ones_like(total)),
        learned_weight,
    )
    r = share[:, None] * ev.r_learned + (1.0 - share[:, None]) * ev.r_dsp
    r = r * (lags <= ev.max_lag[:, None]).to(dtype)
    return r


def decide(
    ev: Evidence,
    learned_weight: torch.Tensor,
    adaptive: torch.Tensor,
    min_activity: torch.Tensor,
    min_confidence: torch.Tensor,
) -> Decision:
    """Mix, period and answer for a batch of windows; the settings are per row (``[batch]`` tensors),
    so one call scores many settings (module doc of :mod:`training.estimator`, steps 2-3)."""
    r = mix(ev, learned_weight, adaptive)
    lag, height = pick_period(r, ev.max_lag)
    rr_bpm = 60.0 * STEPS_PER_SECOND / torch.clamp(lag, min=1.0)
    period_strength = torch.clamp(height, 0.0, 1.0)
    confidence = period_strength * torch.clamp(ev.activity / ACTIVITY_FULL, max=1.0)
    silent = ev.activity < min_activity
    nothing = torch.logical_or((r == 0).all(-1), ev.max_lag <= MIN_LAG + 1)
    noisy = _any_of(nothing, period_strength < min_confidence, rr_bpm < MIN_RATE_BPM, rr_bpm > MAX_RATE_BPM)
    reason = torch.where(
        silent,
        torch.full_like(rr_bpm, NO_BREATHING),
        torch.where(noisy, torch.full_like(rr_bpm, TOO_NOISY), torch.full_like(rr_bpm, RATE)),
    )
    confidence = torch.where(torch.logical_or(silent, nothing), torch.zeros_like(confidence), confidence)
    rr_bpm = torch.where(reason == RATE, rr_bpm, torch.zeros_like(rr_bpm))
    return Decision(rr_bpm, confidence, reason, ev.activity)


class BandPowers(torch.nn.Module):
    """The DSP's band powers in tensor ops (the form a Core ML graph holds): ``[B, samples]`` ->
    ``[B, bands, frames]``, frame ``j`` starting at sample ``j * hop``; equal to
    :func:`training.dsp_baseline.band_powers` (numpy's FFT) to float32 round-off. The DFT is
    :class:`training.framed_dft.FramedPowerSpectrum`, up to the top band's edge (6.4 kHz)."""

    to_bands: torch.Tensor

    def __init__(self, sample_rate: int, cfg: DspConfig = DSP_CONFIG) -> None:
        super().__init__()
        from training.dsp_baseline import band_matrix
        from training.framed_dft import FramedPowerSpectrum

        frame = round(cfg.frame_s * sample_rate)
        matrix = band_matrix(sample_rate, cfg)  # [frame // 2 + 1, bands]
        n_bins = int(np.flatnonzero(matrix.any(1)).max()) + 1
        self.spectrum = FramedPowerSpectrum(frame, round(cfg.hop_s * sample_rate), np.hanning(frame), n_bins)
        self.register_buffer("to_bands", torch.tensor(matrix[:n_bins], dtype=torch.float32))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.spectrum(audio), self.to_bands).transpose(1, 2)
