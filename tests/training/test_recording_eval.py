"""Recording-level evaluation: the summary table, the calibration and its DSP floor."""

import math

import numpy as np
import pytest
import torch

from training.estimator import EstimatorConfig, WindowEvidence, decide
from training.periodicity import MAX_LAG
from training.realism import cycle_stats
from training.recording_eval import (
    Answer,
    EvalRecording,
    calibrate,
    calibration_loss,
    real_group_errors,
    summarise,
)

STEPS = 20.0


def _peak_at(rate_bpm, height=0.8, n=MAX_LAG + 1):
    """An autocorrelation with one clean peak at the period of ``rate_bpm``."""
    r = np.zeros(n)
    r[0] = 1.0
    lag = 60.0 / rate_bpm * STEPS
    lags = np.arange(n)
    r += height * np.exp(-0.5 * ((lags - lag) / 3.0) ** 2)
    return torch.tensor(r, dtype=torch.float32)


def _evidence(r_learned, r_dsp, activity):
    return WindowEvidence(r_learned, r_dsp, activity, float(MAX_LAG), STEPS)


def _rec(group, truth):
    return EvalRecording(f"{group}-{truth}", group, np.zeros(10), truth, truth is not None)


def test_summary_counts_errors_answers_and_false_rates():
    rows = [
        (_rec("RRuJO a", 12.0), {"estimator": Answer(12.5), "DSP baseline": Answer(24.0)}),
        (_rec("RRuJO a", 10.0), {"estimator": Answer(None, "too_noisy"), "DSP baseline": Answer(10.0)}),
        (
            _rec("no breathing: x", None),
            {"estimator": Answer(None, "no_breathing"), "DSP baseline": Answer(9.0)},
        ),
    ]
    table = summarise(rows)
    assert table["RRuJO a"]["estimator"] == {
        "n": 2,
        "answered": 0.5,
        "mae_bpm": 0.5,
        "within_1_bpm": 1.0,
        "no_breathing_share": 0.0,
    }
    assert table["RRuJO a"]["DSP baseline"]["mae_bpm"] == pytest.approx(6.0)
    assert table["no breathing: x"]["estimator"]["false_rate_share"] == 0.0
    assert table["no breathing: x"]["DSP baseline"]["false_rate_share"] == 1.0


def test_calibration_keeps_the_dsp_floor_on_real_groups():
    """The learned evidence is right on synthetic recordings and wrong on real ones: the chosen
    settings may use it only where it does not make the real group worse than the DSP alone."""
    recordings, evidence = [], []
    for rate in (12.0, 15.0, 18.0, 20.0):
        recordings.append(_rec("synthetic, stage 1", rate))
        evidence.append(_evidence(_peak_at(rate), _peak_at(2 * rate, 0.9), 0.6))  # DSP: octave
        recordings.append(_rec("RRuJO thinklabs", rate))
        evidence.append(_evidence(_peak_at(rate * 0.7), _peak_at(rate, 0.9), 0.6))  # learned wrong
    chosen, loss = calibrate(recordings, evidence)
    floor = real_group_errors(recordings, evidence, EstimatorConfig(0.0, 0.0, 0.0))["RRuJO thinklabs"][0]
    mine = real_group_errors(recordings, evidence, chosen)["RRuJO thinklabs"][0]
    assert mine <= floor + 0.05
    assert loss == pytest.approx(calibration_loss(recordings, evidence, chosen))
    assert math.isfinite(loss)


def test_calibration_prefers_no_breathing_to_too_noisy_on_silence():
    """A no-breath clip with little breath activity and no periodicity: a low activity threshold
    answers "too noisy", a higher one "no breathing"; both give no rate, but the calibration must
    choose the threshold that tells the person the right thing (breathing recordings keep theirs)."""
    recordings = [_rec("no breathing: synthetic", None), _rec("synthetic, stage 1", 15.0)]
    flat = torch.zeros(MAX_LAG + 1)
    flat[0] = 1.0
    evidence = [
        _evidence(flat, flat, 0.2),
        _evidence(_peak_at(15.0), _peak_at(15.0), 0.8),
    ]
    low = EstimatorConfig(min_activity=0.05, min_confidence=0.1)
    high = EstimatorConfig(min_activity=0.3, min_confidence=0.1)
    assert calibration_loss(recordings, evidence, low) > calibration_loss(recordings, evidence, high)
    chosen, _ = calibrate(recordings, evidence)
    assert chosen.min_activity > 0.2
    assert decide(evidence[0], chosen).reason == "no_breathing"
    assert decide(evidence[1], chosen).rr_bpm == pytest.approx(15.0, abs=0.2)


def test_cycle_depth_of_a_known_envelope():
    sr = 16000
    t = np.arange(60 * sr) / sr
    rng = np.random.default_rng(0)
    loud = (np.sin(2 * np.pi * 15 / 60 * t) > 0).astype(float)
    audio = rng.standard_normal(len(t)) * (0.1 * loud + 0.001)  # 40 dB between burst and pause
    stats = cycle_stats(audio.astype(np.float32), 15.0)
    assert stats.depth_db == pytest.approx(40.0, abs=3.0)
    assert stats.profile_db.shape == (40,) and stats.profile_db[0] == stats.profile_db.max()
