"""Device simulation keeps length and timing and does what each effect says."""

import numpy as np
import pytest

from training.device_augment import DeviceAugmentConfig, agc, band_limit, clip, noise_gate, simulate_device

SR = 16000


def _bursts(seconds=6.0, rate_bpm=15.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    envelope = np.clip(np.sin(2 * np.pi * rate_bpm / 60 * t), 0, None) ** 2
    return (0.1 * envelope * rng.standard_normal(len(t))).astype(np.float32), envelope


def test_band_limit_removes_energy_above_the_native_nyquist_without_moving_audio():
    x, _ = _bursts()
    y = band_limit(x, 4000)
    spectrum = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    assert spectrum[freqs > 2100].sum() < 1e-4 * spectrum.sum()
    # timing kept: the band-limited signal correlates best with the original at lag 0
    low = band_limit(x, 8000)
    lags = [np.dot(low[100:-100], np.roll(x, k)[100:-100]) for k in range(-3, 4)]
    assert int(np.argmax(lags)) == 3


def test_noise_gate_leaves_digital_silence_between_breaths():
    x, envelope = _bursts()
    y = noise_gate(x, np.random.default_rng(0))
    quiet = envelope < 1e-3
    assert np.mean(y[quiet] == 0.0) > 0.8
    assert np.mean(y[envelope > 0.5] != 0.0) > 0.99


def test_agc_flattens_loudness_contrast():
    x, envelope = _bursts(seconds=20)
    y = agc(x, np.random.default_rng(1))

    def contrast(z):
        loud = np.sqrt(np.mean(z[envelope > 0.5] ** 2))
        soft = np.sqrt(np.mean(z[(envelope > 0.01) & (envelope < 0.1)] ** 2))
        return loud / soft

    assert contrast(y) < contrast(x)


def test_clip_limits_the_peak():
    x, _ = _bursts()
    y = clip(x, np.random.default_rng(2))
    assert np.max(np.abs(y)) < np.max(np.abs(x))


@pytest.mark.parametrize("seed", range(5))
def test_simulate_device_keeps_length_and_stays_under_full_scale(seed):
    x, _ = _bursts()
    y = simulate_device(x, np.random.default_rng(seed), DeviceAugmentConfig(gate_prob=1.0, agc_prob=1.0))
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.max(np.abs(y)) <= 0.99 + 1e-6
