"""The synthesised backgrounds: shape, determinism, and the spectral/temporal character each kind claims."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from training.noise import APPLIANCE_KINDS, NOISE_KINDS, NOISE_RMS, kinds_for, make_noise

SR = 16_000
DURATION_S = 8.0
SEEDS = (0, 1, 2)


def _psd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return signal.welch(x, SR, nperseg=8192)  # ~2 Hz resolution


def _band_share(x: np.ndarray, lo_hz: float, hi_hz: float) -> float:
    f, p = _psd(x)
    return float(p[(f >= lo_hz) & (f < hi_hz)].sum() / p.sum())


def _flatness(x: np.ndarray, lo_hz: float = 100, hi_hz: float = 4000) -> float:
    """Geometric over arithmetic mean of the power spectrum: ~1 for white noise, ~0 for lines."""
    f, p = _psd(x)
    band = p[(f >= lo_hz) & (f < hi_hz)]
    return float(np.exp(np.mean(np.log(band + 1e-30))) / np.mean(band))


def _rms_track(x: np.ndarray, window_s: float) -> np.ndarray:
    w = round(window_s * SR)
    return np.sqrt(np.mean(x[: x.size // w * w].reshape(-1, w) ** 2, axis=1))


def _envelope(x: np.ndarray, hop_s: float = 0.01) -> np.ndarray:
    """Frame RMS every 10 ms, mean removed."""
    env = _rms_track(x, hop_s)
    return env - env.mean()


def _line_prominence_db(x: np.ndarray, freq_hz: float) -> float:
    """Power at ``freq_hz`` over the median power 8-30 Hz away on both sides."""
    f, p = _psd(x)
    peak = p[np.abs(f - freq_hz) <= 3].max()
    side = p[(np.abs(f - freq_hz) >= 8) & (np.abs(f - freq_hz) <= 30)]
    return float(10 * np.log10(peak / np.median(side)))


def _is_hum(x: np.ndarray) -> bool:
    """Lines at the first four multiples of 50 Hz or of 60 Hz, at least 20 dB over their neighbourhood."""
    return any(all(_line_prominence_db(x, k * mains) > 20 for k in (1, 2, 3, 4)) for mains in (50.0, 60.0))


def _periodicity(x: np.ndarray) -> float:
    """Lag (s) of the strongest envelope periodicity between 0.3 and 0.8 s, and its strength.

    The envelope is detrended with a 0.5 s moving average first, so slow level changes (gusts, fan
    modulation) do not pass for periodicity; strength is the normalised autocorrelation at that lag.
    """
    env = _envelope(x)
    env = env - np.convolve(env, np.ones(51) / 51, mode="same")
    ac = np.correlate(env, env, mode="full")[env.size - 1 :]
    ac = ac / ac[0]
    lo, hi = 30, 80
    lag = lo + int(np.argmax(ac[lo : hi + 1]))
    return lag * 0.01, float(ac[lag])


def _tonality(x: np.ndarray, lo_hz: float = 100, hi_hz: float = 4000) -> float:
    """Share of the band's power in spectral lines: bins over 10x the median of their ~50 Hz neighbourhood."""
    f, p = _psd(x)
    band = (f >= lo_hz) & (f < hi_hz)
    local = signal.medfilt(p, 25)
    lines = band & (p > 10 * local)
    return float(p[lines].sum() / p[band].sum())


def _syllabic_share(x: np.ndarray) -> float:
    """Share of the envelope's modulation power between 2 and 8 Hz (speech syllable rates) in 0.5-25 Hz."""
    f, p = signal.welch(_envelope(x), fs=100, nperseg=256)
    return float(p[(f >= 2) & (f <= 8)].sum() / p[(f >= 0.5) & (f <= 25)].sum())


@pytest.fixture(scope="module")
def noises() -> dict[str, list[np.ndarray]]:
    return {k: [make_noise(k, DURATION_S, np.random.default_rng(s)) for s in SEEDS] for k in NOISE_KINDS}


def test_kinds_and_environments():
    assert set(APPLIANCE_KINDS) == {"fan", "air_conditioner", "fridge_hum"}
    assert set(APPLIANCE_KINDS) <= set(kinds_for("indoor"))
    assert not set(APPLIANCE_KINDS) & set(kinds_for("outdoor"))
    assert {"wind", "traffic"} <= set(kinds_for("outdoor")) - set(kinds_for("indoor"))
    assert {"footsteps", "music", "babble"} <= set(kinds_for("indoor")) & set(kinds_for("outdoor"))
    assert set(kinds_for("indoor")) | set(kinds_for("outdoor")) == set(NOISE_KINDS)
    with pytest.raises(ValueError, match="environment"):
        kinds_for("underwater")
    with pytest.raises(ValueError, match="unknown noise kind 'jackhammer'"):
        make_noise("jackhammer", 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="positive"):
        make_noise("fan", 0.0, np.random.default_rng(0))


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_shape_level_and_determinism(kind, noises):
    x = noises[kind][0]
    assert x.dtype == np.float32 and x.shape == (round(DURATION_S * SR),)
    assert np.all(np.isfinite(x))
    assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) == pytest.approx(NOISE_RMS, rel=1e-3)
    again = make_noise(kind, DURATION_S, np.random.default_rng(SEEDS[0]))
    np.testing.assert_array_equal(x, again)
    assert not np.allclose(x, noises[kind][1])
    # Nothing audible above the front-end's 7.5 kHz band edge worth speaking of.
    assert _band_share(x, 7500, 8001) < 0.02


def test_fridge_hum_has_mains_harmonics_and_others_do_not(noises):
    for x in noises["fridge_hum"]:
        assert _is_hum(x)
    for kind in ("fan", "babble", "wind"):
        assert not any(_is_hum(x) for x in noises[kind]), kind


def test_footsteps_are_periodic_at_a_running_or_walking_cadence(noises):
    for x in noises["footsteps"]:
        lag_s, strength = _periodicity(x)
        assert 1 / 3.0 - 0.02 <= lag_s <= 1 / 1.4 + 0.02  # 84-180 steps per minute
        assert strength > 0.6
        assert _band_share(x, 0, 300) > 0.8  # thumps are low
    for kind in ("fan", "air_conditioner", "traffic"):
        assert all(_periodicity(x)[1] < 0.4 for x in noises[kind]), kind


def test_fan_is_broadband_and_slowly_modulated(noises):
    for x in noises["fan"]:
        assert _flatness(x) > 0.3
        assert _band_share(x, 1000, 7000) > 0.3
        level = _rms_track(x, 0.25)
        assert 0.02 < level.std() / level.mean() < 0.5


def test_air_conditioner_is_rumble_plus_hiss(noises):
    for x in noises["air_conditioner"]:
        assert _band_share(x, 0, 300) > 0.5
        assert _band_share(x, 2000, 7000) > 0.01
        assert _band_share(x, 300, 1500) < 0.1  # the two parts, not a flat spectrum


def test_wind_is_low_and_gusty(noises):
    for x in noises["wind"]:
        assert _band_share(x, 0, 500) > 0.6
        level = _rms_track(x, 0.5)
        assert level.max() / level.min() > 2.0
    for x in noises["fan"]:  # a steady appliance is not
        level = _rms_track(x, 0.5)
        assert level.max() / level.min() < 2.0


def test_traffic_is_low_frequency_rumble(noises):
    for x in noises["traffic"]:
        assert _band_share(x, 0, 1500) > 0.9
        assert _band_share(x, 0, 300) > 0.2


def test_music_is_tonal(noises):
    for x in noises["music"]:
        assert _tonality(x) > 0.5
    for kind in ("fan", "air_conditioner", "wind", "traffic"):
        assert all(_tonality(x) < 0.05 for x in noises[kind]), kind


def test_babble_is_speech_band_with_syllabic_modulation(noises):
    for x in noises["babble"]:
        assert _band_share(x, 100, 4000) > 0.9
        assert _syllabic_share(x) > 0.4
    for kind in ("fan", "fridge_hum"):  # steady appliances
        assert all(_syllabic_share(x) < 0.36 for x in noises[kind]), kind
