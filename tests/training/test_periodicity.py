"""The estimator's window arithmetic (training.periodicity): one definition for offline and the package.

What must hold for the package's rolling rate to equal the offline one: a window that sits at the end
of a longer buffer (a stream not yet 30 s old) gives the window's own answer; the traced forms (the
spectral autocorrelation, the DSP's DFT as matrix products) equal the eager ones; and the tensor form of
the period picking agrees with the DSP baseline's numpy one.
"""

import numpy as np
import pytest
import torch

from training import periodicity as P
from training.dsp_baseline import DEFAULT_CONFIG, band_powers
from training.dsp_baseline import pick_period as numpy_pick_period


def _breathing_powers(seconds: float, rate_bpm: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = np.clip(np.sin(2 * np.pi * rate_bpm / 60 * t), 0, None) ** 2
    audio = (0.05 * envelope * rng.standard_normal(len(t)) + 1e-3 * rng.standard_normal(len(t))).astype(
        np.float32
    )
    power, _ = band_powers(audio, 16000, DEFAULT_CONFIG)
    return np.log(power + np.float32(P.LOG_POWER_EPS)).astype(np.float32)


def _phase(steps: int, rate_bpm: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    t = np.arange(steps) / P.STEPS_PER_SECOND
    phase = np.sin(2 * np.pi * rate_bpm / 60 * t) * 0.8 + 0.1 * rng.standard_normal(steps)
    activity = 0.6 + 0.1 * rng.random(steps)
    return torch.tensor(phase, dtype=torch.float32)[None], torch.tensor(activity, dtype=torch.float32)[None]


def test_lagged_products_traced_form_equals_the_eager_one():
    """The package computes autocorrelations through the spectrum; offline, by a grouped convolution."""

    class Products(torch.nn.Module):
        def forward(self, x):
            return P.lagged_products(x, P.MAX_LAG)

    x = torch.randn(2, 8, 600, generator=torch.Generator().manual_seed(0))
    eager = P.lagged_products(x, P.MAX_LAG)
    traced = torch.jit.trace(Products(), (x,))(x)
    direct = torch.stack([(x[..., : 600 - k] * x[..., k:]).sum(-1) for k in range(P.MAX_LAG + 1)], -1)
    assert torch.allclose(eager, direct, rtol=1e-5, atol=1e-3)
    scale = eager[..., :1].abs()
    assert ((traced - eager).abs() / scale).max() < 1e-5


def test_band_powers_as_matrix_products_equal_numpys_fft():
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32)
    expected, _ = band_powers(audio, 16000, DEFAULT_CONFIG)
    got = P.BandPowers(16000)(torch.from_numpy(audio)[None])[0].numpy()
    assert got.shape == expected.shape
    assert np.abs(np.log(got) - np.log(expected)).max() < 1e-4


@pytest.mark.parametrize("valid_s", [6.0, 17.5, 30.0])
def test_a_window_at_the_end_of_a_longer_buffer_gives_its_own_answer(valid_s):
    """A stream younger than the window: its buffers hold zeros before the audio, masked out."""
    log_power = _breathing_powers(valid_s + 0.1, 14.0)
    frames = min(log_power.shape[1] - (log_power.shape[1] % 2), 1198)  # even, as the package holds
    log_power = log_power[:, :frames]
    steps = int(valid_s * P.STEPS_PER_SECOND)
    phase, activity = _phase(steps, 14.0)
    alone = P.evidence(
        phase,
        activity,
        torch.tensor([float(steps)]),
        torch.from_numpy(log_power)[None],
        torch.tensor([float(frames)]),
    )
    pad_steps, pad_frames = 600 - steps, 1198 - frames
    buffered = P.evidence(
        torch.nn.functional.pad(phase, (pad_steps, 0), value=0.3),  # garbage before the window
        torch.nn.functional.pad(activity, (pad_steps, 0), value=0.9),
        torch.tensor([float(steps)]),
        torch.nn.functional.pad(torch.from_numpy(log_power)[None], (pad_frames, 0), value=5.0),
        torch.tensor([float(frames)]),
    )
    for name in ("r_learned", "r_dsp", "activity", "max_lag"):
        assert torch.allclose(getattr(alone, name), getattr(buffered, name), atol=2e-5), name
    answer = P.decide(buffered, *(torch.tensor([v]) for v in (0.5, True, 0.1, 0.1)))
    assert int(answer.reason) == P.RATE and float(answer.rr_bpm) == pytest.approx(14.0, rel=0.05)


def test_tensor_period_picking_agrees_with_the_dsp_baselines():
    """Random autocorrelation-like curves (decaying sums of cosines): the same period as numpy's."""
    rng = np.random.default_rng(7)
    curves, max_lags = [], []
    for _ in range(300):
        lags = np.arange(P.MAX_LAG + 1)
        r = np.zeros(len(lags))
        for _ in range(rng.integers(1, 4)):
            r += rng.uniform(0.2, 1.0) * np.cos(2 * np.pi * lags / rng.uniform(20, 300))
        r *= np.exp(-lags / rng.uniform(100, 600))
        r += 0.05 * rng.standard_normal(len(lags))
        r /= r[0]
        max_lag = int(rng.integers(P.MIN_LAG + 3, P.MAX_LAG + 1))
        r[max_lag + 1 :] = 0.0
        curves.append(r.astype(np.float32))
        max_lags.append(max_lag)
    lag, height = P.pick_period(torch.tensor(np.stack(curves)), torch.tensor(max_lags, dtype=torch.float32))
    for i, (r, max_lag) in enumerate(zip(curves, max_lags, strict=True)):
        expected_lag, expected_height = numpy_pick_period(r[: max_lag + 1].astype(np.float64), P.MIN_LAG)
        assert float(lag[i]) == pytest.approx(expected_lag, abs=1e-3), i
        assert float(height[i]) == pytest.approx(expected_height, abs=1e-4), i


def test_one_batch_scores_many_settings_as_one_by_one():
    phase, activity = _phase(600, 20.0)
    log_power = torch.from_numpy(_breathing_powers(30.0, 20.0)[:, :1198])[None]
    ev = P.evidence(phase, activity, torch.tensor([600.0]), log_power, torch.tensor([1198.0]))
    settings = [
        (w, a, m, c) for w in (0.0, 0.5, 1.0) for a in (True, False) for m in (0.1, 0.7) for c in (0.1, 0.9)
    ]
    batch = P.Evidence(
        *(t.expand(len(settings), *t.shape[1:]) for t in (ev.r_learned, ev.r_dsp, ev.activity, ev.max_lag))
    )
    together = P.decide(batch, *(torch.tensor([s[i] for s in settings]) for i in range(4)))
    for i, s in enumerate(settings):
        alone = P.decide(ev, *(torch.tensor([v]) for v in s))
        assert float(together.rr_bpm[i]) == float(alone.rr_bpm[0])
        assert int(together.reason[i]) == int(alone.reason[0])
    reasons = {int(r) for r in together.reason}
    assert reasons == {P.RATE, P.NO_BREATHING, P.TOO_NOISY}  # the settings decide, as documented


def test_mixing_follows_the_more_periodic_side():
    lags = np.arange(P.MAX_LAG + 1)
    strong = np.exp(-0.5 * ((lags - 80) / 3.0) ** 2) * 0.9
    weak = np.exp(-0.5 * ((lags - 40) / 3.0) ** 2) * 0.1
    strong[0] = weak[0] = 1.0
    ev = P.Evidence(
        torch.tensor(strong, dtype=torch.float32)[None],
        torch.tensor(weak, dtype=torch.float32)[None],
        torch.tensor([0.6]),
        torch.tensor([float(P.MAX_LAG)]),
    )
    half = torch.tensor([0.5])
    share = 0.81 / (0.81 + 0.01)  # periodicities squared
    adaptive = P.mix(ev, half, torch.tensor([True]))[0].numpy()
    fixed = P.mix(ev, half, torch.tensor([False]))[0].numpy()
    assert np.allclose(fixed, 0.5 * strong + 0.5 * weak, atol=1e-6)
    assert np.allclose(adaptive, share * strong + (1 - share) * weak, atol=1e-6)
    assert np.allclose(P.mix(ev, torch.tensor([0.0]), torch.tensor([True]))[0].numpy(), weak, atol=1e-7)
