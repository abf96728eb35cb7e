"""Frame labels from the generator's cycles, the phase losses, and real-noise parts."""

import numpy as np
import pytest
import torch

from training.losses import activity_loss, periodicity_loss, phase_cross_entropy
from training.phase_data import OTHER, UNKNOWN, collate_phase, noise_windows, step_times_s, synth_windows
from training.real_noise import PART_BOUNDS, NoiseBank, load_noise_bank
from training.synth import BreathCycles, make_participant, synth_recording

STRIDE = 5


def test_phase_labels_follow_the_cycles():
    cycles = BreathCycles(np.array([0.0, 4.0]), np.array([4.0, 4.0]), np.array([1.5, 1.5]))
    times = np.array([0.5, 1.4, 1.6, 3.9, 4.2, 7.5, 8.5])
    # inhale 0-1.5 s; at 15 breaths/min the exhale burst fills 67 % of the 2.5 s expiration: 1.5-3.18 s
    assert cycles.phase_at(times).tolist() == [0, 0, 1, 2, 0, 2, 2]
    assert BreathCycles(np.zeros(0), np.zeros(0), np.zeros(0)).phase_at(times).tolist() == [2] * 7


def test_labels_of_a_generated_recording_match_its_rate():
    person = make_participant("phase-test", 7)
    rec = synth_recording(person, None, 30.0, np.random.default_rng(0), rate_bpm=20.0)
    labels = rec.cycles.phase_at(step_times_s(600, STRIDE))
    onsets = np.sum((labels[1:] == 0) & (labels[:-1] != 0))
    assert abs(onsets - rec.label(0.0, 30.0)[1]) <= 1.5
    assert set(np.unique(labels)) == {0, 1, 2}


def test_synth_windows_are_labelled_and_reproducible():
    bank = NoiseBank("train", {})
    a = synth_windows(6, 3, 12.0, STRIDE, bank, no_breath_share=0.34)
    b = synth_windows(6, 3, 12.0, STRIDE, bank, no_breath_share=0.34)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.features, y.features) and np.array_equal(x.phase, y.phase)
        assert len(x.phase) == len(x.features) // STRIDE
        if x.breathing == 0:
            assert (x.phase == OTHER).all() and x.period_steps == 0
    assert any(x.breathing == 0 for x in a) and any(x.breathing == 1 for x in a)


def test_noise_parts_do_not_overlap_and_noise_windows_are_all_other(tmp_path):
    import soundfile as sf

    sf.write(
        tmp_path / "exercise_bike.flac", np.random.default_rng(0).standard_normal(16000 * 20) * 0.1, 16000
    )
    sf.write(tmp_path / "pink_noise.flac", np.random.default_rng(1).standard_normal(16000 * 20) * 0.1, 16000)
    parts = {p: load_noise_bank(p, tmp_path) for p in PART_BOUNDS}
    assert all(list(b.signals) == ["exercise_bike"] for b in parts.values())  # recorded files only
    total = sum(len(b.signals["exercise_bike"]) for b in parts.values())
    assert total == 16000 * 20
    windows = noise_windows(parts["train"], 3, 5.0, STRIDE, seed=0)
    assert all((w.phase == OTHER).all() and w.breathing == 0 for w in windows)
    assert not load_noise_bank("train", tmp_path / "missing")
    with pytest.raises(ValueError, match="part"):
        load_noise_bank("eval", tmp_path)


def _logits_from_phase(phase_signal):
    """Logits whose softmax has p(inhale) - p(exhale) ~ phase_signal."""
    logits = torch.zeros(1, len(phase_signal), 3)
    logits[0, :, 0] = 4 * torch.as_tensor(phase_signal)
    logits[0, :, 1] = -4 * torch.as_tensor(phase_signal)
    return logits


def test_periodicity_loss_prefers_the_true_period_over_its_octaves():
    steps = torch.arange(480, dtype=torch.float32)
    lengths = torch.tensor([480])
    right = _logits_from_phase(torch.sin(2 * np.pi * steps / 80))  # period 80 steps
    double = _logits_from_phase(torch.sin(2 * np.pi * steps / 40))  # twice the rate
    period = torch.tensor([80.0])
    assert periodicity_loss(right, period, lengths) < 0.3
    assert periodicity_loss(double, period, lengths) > 1.0
    assert periodicity_loss(right, torch.tensor([0.0]), lengths) == 0.0  # unknown period: no loss


def test_phase_cross_entropy_ignores_unknown_steps_and_activity_hinge():
    logits = torch.zeros(2, 10, 3, requires_grad=True)
    labels = torch.full((2, 10), UNKNOWN)
    assert float(phase_cross_entropy(logits, labels)) == 0.0
    labels[0, :5] = 0
    assert float(phase_cross_entropy(logits, labels)) == pytest.approx(np.log(3), rel=1e-4)
    quiet = torch.zeros(1, 10, 3)
    quiet[..., 2] = 5.0
    assert float(activity_loss(quiet, torch.tensor([1]), torch.tensor([10]))) > 0.3
    assert float(activity_loss(quiet, torch.tensor([0]), torch.tensor([10]))) == 0.0


def test_collate_pads_with_unknown_labels():
    bank = NoiseBank("train", {})
    a, b = synth_windows(2, 1, 8.0, STRIDE, bank, no_breath_share=0.0)
    b.features, b.phase = b.features[:500], b.phase[:100]
    batch = collate_phase([a, b], STRIDE)
    assert batch.features.shape[1] == len(a.features)
    assert (batch.phase[1, 100:] == UNKNOWN).all()
