"""The real-noise bank: parts split by time, and short parts spliced rather than looped."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from training.dsp_baseline import _autocorrelation
from training.frontend import SAMPLE_RATE_HZ
from training.real_noise import PART_BOUNDS, NoiseBank, load_noise_bank, splice

RATE = SAMPLE_RATE_HZ


def _envelope_acf(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Autocorrelation of the log-energy envelope at 40 Hz (what a breath-rate estimator looks at)."""
    energy = np.convolve(x.astype(np.float64) ** 2, np.ones(800) / 800, "valid")[::400]
    env = np.log(energy + 1e-9)
    return _autocorrelation(env - env.mean(), max_lag)


def test_splice_has_no_period_where_a_loop_has_one() -> None:
    """A 10 s stretch looped to 60 s repeats every 10 s (400 envelope frames): a breathing-like period
    at 6 breaths/min. The spliced stretch shows no such peak."""
    rng = np.random.default_rng(0)
    # noise with a slow loudness wander, so the loop point is recognisable
    wander = 1.0 + 0.5 * np.sin(np.linspace(0, 7.0, 10 * RATE))
    x = (rng.standard_normal(10 * RATE) * wander).astype(np.float32)
    looped = np.tile(x, 6)
    spliced = splice(x, 60 * RATE, np.random.default_rng(1))
    assert len(spliced) == 60 * RATE and spliced.dtype == np.float32
    at_loop = slice(380, 421)  # lags around 10 s
    assert _envelope_acf(looped, 500)[at_loop].max() > 0.5
    assert _envelope_acf(spliced, 500)[at_loop].max() < 0.2


def test_splice_keeps_the_level_and_has_no_clicks() -> None:
    rng = np.random.default_rng(2)
    x = (0.1 * rng.standard_normal(9 * RATE)).astype(np.float32)
    y = splice(x, 40 * RATE, rng)
    assert abs(float(y.std()) / float(x.std()) - 1.0) < 0.1
    assert float(np.abs(np.diff(y)).max()) < 6 * float(np.abs(np.diff(x)).max())


def test_draw_splices_only_when_the_file_is_short() -> None:
    x = np.arange(5 * RATE, dtype=np.float32)
    bank = NoiseBank("val", {"ramp": x})
    name, piece = bank.draw(2 * RATE, np.random.default_rng(0))
    assert name == "ramp" and np.array_equal(np.diff(piece), np.ones(2 * RATE - 1, dtype=np.float32))
    _, long = bank.draw(12 * RATE, np.random.default_rng(0))
    assert len(long) == 12 * RATE


def test_parts_do_not_overlap_in_time() -> None:
    bounds = sorted(PART_BOUNDS.values())
    assert bounds[0][0] == 0.0 and bounds[-1][1] == 1.0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    with pytest.raises(ValueError, match="part must be one of"):
        load_noise_bank("holdout")
