"""The one estimator: rates from phase + DSP evidence, answers with reasons, counting, timeline."""

import math

import numpy as np
import pytest
import torch

from training.estimator import (
    MAX_RATE_BPM,
    MIN_RATE_BPM,
    EstimatorConfig,
    PhaseTrack,
    WindowEvidence,
    count_breaths,
    decide,
    learned_rate,
    timeline_ends,
    window_estimate,
)
from training.periodicity import MAX_LAG

SR = 16000
STEPS_PER_S = 20.0
LAGS = MAX_LAG + 1


def _evidence(r_learned, r_dsp, activity, max_lag=MAX_LAG):
    return WindowEvidence(
        torch.tensor(r_learned, dtype=torch.float32),
        torch.tensor(r_dsp, dtype=torch.float32),
        float(activity),
        float(max_lag),
        STEPS_PER_S,
    )


def _breathing(seconds, rate_bpm, seed=0, exhale_gain=1.0, exhale_at=0.45):
    """Audio with an inhale and an exhale burst per cycle, and the matching ideal phase track."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    cycle = (t * rate_bpm / 60.0) % 1.0
    inhale = (cycle < 0.4) * np.sin(np.pi * cycle / 0.4) ** 2
    exhale = ((cycle >= exhale_at) & (cycle < exhale_at + 0.4)) * np.sin(
        np.pi * (cycle - exhale_at) / 0.4
    ) ** 2
    audio = 0.05 * (inhale + exhale_gain * exhale) * rng.standard_normal(len(t)) + 1e-4 * rng.standard_normal(
        len(t)
    )
    steps = np.arange(int(seconds * STEPS_PER_S)) / STEPS_PER_S
    c = (steps * rate_bpm / 60.0) % 1.0
    probs = np.zeros((len(steps), 3))
    probs[:, 0] = c < 0.4
    probs[:, 1] = (c >= exhale_at) & (c < exhale_at + 0.4)
    probs[:, 2] = 1 - probs[:, 0] - probs[:, 1]
    probs = 0.9 * probs + 0.1 / 3
    return audio.astype(np.float32), PhaseTrack(probs, STEPS_PER_S, np.array([0.1, 0.8, 0.1]), 0.1)


@pytest.mark.parametrize("rate_bpm", [6.0, 12.0, 20.0, 35.0, 50.0])
@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_rate_of_regular_breathing(rate_bpm, weight):
    audio, track = _breathing(40.0, rate_bpm)
    w = window_estimate(audio, track, 0.0, 40.0, EstimatorConfig(learned_weight=weight))
    assert w.reason is None and w.rr_bpm == pytest.approx(rate_bpm, rel=0.04)
    assert 0.0 < w.rr_confidence <= 1.0


def test_equal_inhale_and_exhale_fool_the_dsp_but_not_the_phase_signal():
    """Inhale and exhale bursts alike: loudness repeats twice per breath, the phase signal once."""
    audio, track = _breathing(40.0, 12.0, exhale_at=0.5)  # evenly spaced, identical bursts
    dsp_only = window_estimate(audio, track, 0.0, 40.0, EstimatorConfig(learned_weight=0.0))
    learned = window_estimate(audio, track, 0.0, 40.0, EstimatorConfig(learned_weight=1.0))
    assert learned.rr_bpm == pytest.approx(12.0, rel=0.04)
    assert dsp_only.rr_bpm == pytest.approx(24.0, rel=0.06)  # the octave error the phase output removes


def test_low_activity_is_no_breathing_and_weak_periodicity_is_too_noisy():
    audio, track = _breathing(30.0, 15.0)
    quiet = PhaseTrack(
        np.tile([0.02, 0.02, 0.96], (len(track.probs), 1)), STEPS_PER_S, track.breath_probs, 0.1
    )
    w = window_estimate(audio, quiet, 0.0, 30.0, EstimatorConfig())
    assert (w.rr_bpm, w.reason) == (None, "no_breathing")
    flat = _evidence(np.zeros(LAGS), np.zeros(LAGS), activity=0.6)
    assert decide(flat, EstimatorConfig()).reason == "too_noisy"
    rng = np.random.default_rng(0)
    r_learned, r_dsp = 0.05 * rng.standard_normal(LAGS), 0.05 * rng.standard_normal(LAGS)
    r_learned[0] = r_dsp[0] = 1.0
    assert decide(_evidence(r_learned, r_dsp, 0.6), EstimatorConfig(min_confidence=0.2)).reason == "too_noisy"


def test_no_rate_outside_the_range_is_ever_reported():
    rng = np.random.default_rng(3)
    for _ in range(200):
        r = rng.standard_normal(LAGS) * rng.uniform(0.05, 1.0)
        r[0] = 1.0
        w = decide(
            _evidence(r, np.roll(r, int(rng.integers(0, 50))), rng.uniform(0, 1)),
            EstimatorConfig(min_confidence=0.0, min_activity=0.0),
        )
        assert w.rr_bpm is None or MIN_RATE_BPM <= w.rr_bpm <= MAX_RATE_BPM
        assert 0.0 <= w.rr_confidence <= 1.0


def test_count_breaths_counts_cycles():
    _, track = _breathing(60.0, 15.0)
    assert count_breaths(track.phase, STEPS_PER_S, 15.0) == pytest.approx(15, abs=1)
    rr, height = learned_rate(track.phase, STEPS_PER_S)
    assert rr == pytest.approx(15.0, rel=0.03) and height > 0.5


def test_config_limits_and_timeline():
    with pytest.raises(ValueError, match="15-60"):
        EstimatorConfig(window_s=10.0)
    with pytest.raises(ValueError, match="learned_weight"):
        EstimatorConfig(learned_weight=1.5)
    assert timeline_ends(12.0, 5.0) == [5.0, 10.0, 12.0]
    assert timeline_ends(10.0, 5.0) == [5.0, 10.0]
    assert EstimatorConfig.from_dict({"window_s": 45, "unknown": 1}).window_s == 45
    assert math.isnan(learned_rate(np.zeros(100), STEPS_PER_S)[0])


def test_windows_read_the_recordings_band_powers_on_one_grid():
    """Every window reads the band powers computed once for the recording: on the grid, exactly the
    window's own; off the grid, the frames wholly inside it (as the package's ring buffer holds them),
    never frames reaching outside the window."""
    from training.dsp_baseline import DEFAULT_CONFIG
    from training.estimator import dsp_log_power, window_frames

    audio, _ = _breathing(40.0, 12.0)
    whole = dsp_log_power(audio)
    own = dsp_log_power(audio[5 * SR : 35 * SR])
    first, stop = window_frames(5.0, 35.0)
    assert stop - first == own.shape[1]
    assert np.allclose(whole[:, first:stop], own, atol=1e-4)
    start_s, end_s = 5.01, 35.0
    first, stop = window_frames(start_s, end_s)
    hop_s = DEFAULT_CONFIG.hop_s
    assert first * hop_s >= start_s
    assert (stop - 1) * hop_s + DEFAULT_CONFIG.frame_s <= end_s + 1e-9
    assert stop - first >= own.shape[1] - 1


def test_batched_phase_tracks_equal_one_recording_at_a_time():
    """Evaluation runs recordings side by side (``phase_tracks``): each keeps its own length, padding
    reaches none of its steps, and rows differ from the one-at-a-time track by round-off alone."""
    from training.checkpoint import load_checkpoint
    from training.estimator import phase_track, phase_tracks

    model, _ = load_checkpoint(None)
    torch.manual_seed(0)
    audios = [
        _breathing(seconds, rate, seed=i)[0]
        for i, (seconds, rate) in enumerate([(9.3, 14), (4.05, 30), (6.0, 20)])
    ]
    audios.append(_breathing(1.0, 40, seed=3)[0])
    batched = phase_tracks(model, audios, batch=3)  # two batches, the longest recordings together
    for audio, got in zip(audios, batched, strict=True):
        alone = phase_track(model, audio)
        assert got.probs.shape == alone.probs.shape
        np.testing.assert_allclose(got.probs, alone.probs, atol=1e-5)
        np.testing.assert_allclose(got.breath_probs, alone.breath_probs, atol=1e-5)
        assert abs(got.noise_prob - alone.noise_prob) < 1e-5
        np.testing.assert_array_equal(got.dsp_log_power, alone.dsp_log_power)
    assert len({t.probs.shape[0] for t in batched}) == len(audios)  # every row was cut to its own length
