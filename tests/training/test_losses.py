"""Each loss against a hand computation."""

import math

import pytest
import torch

from training.config import TrainConfig
from training.losses import (
    TASKS,
    DynamicWeightAverage,
    MultiTaskLoss,
    ccc,
    ccc_cost,
    class_weights,
    focal_loss,
    weighted_cross_entropy,
)


def test_ccc_by_hand():
    pred, true = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.0])
    # means 2 and 4; population covariance 4/3; variances 2/3 and 8/3; squared mean gap 4
    assert float(ccc(pred, true)) == pytest.approx(2 * (4 / 3) / (2 / 3 + 8 / 3 + 4))
    assert float(ccc(true, true)) == pytest.approx(1.0)
    assert float(ccc(-true, true)) == pytest.approx(-2 * (8 / 3) / (8 / 3 + 8 / 3 + 64))
    assert float(ccc_cost(true, true)) == pytest.approx(0.0, abs=1e-7)


def test_class_weights_inverse_frequency_and_absent_class():
    w = class_weights([10, 30, 0])
    assert w.tolist() == pytest.approx([40 / 20, 40 / 60, 0.0])
    assert class_weights([5, 5]).tolist() == pytest.approx([1.0, 1.0])


def test_weighted_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    target = torch.tensor([0, 1])
    weights = torch.tensor([2.0, 0.5, 1.0])
    nll0 = -math.log(math.exp(2) / (math.exp(2) + 2))
    nll1 = -math.log(math.e / (math.e + 2))
    expected = (2.0 * nll0 + 0.5 * nll1) / 2.5
    assert float(weighted_cross_entropy(logits, target, weights)) == pytest.approx(expected, rel=1e-6)


def test_focal_loss_by_hand_and_reduces_to_ce():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    target = torch.tensor([0, 1])
    weights = torch.tensor([2.0, 0.5, 1.0])
    p0 = math.exp(2) / (math.exp(2) + 2)
    p1 = math.e / (math.e + 2)
    expected = (2.0 * (1 - p0) ** 2 * -math.log(p0) + 0.5 * (1 - p1) ** 2 * -math.log(p1)) / 2.5
    assert float(focal_loss(logits, target, weights, focus=2.0)) == pytest.approx(expected, rel=1e-6)
    ce = weighted_cross_entropy(logits, target, weights)
    assert float(focal_loss(logits, target, weights, focus=0.0)) == pytest.approx(float(ce), rel=1e-6)


def test_dynamic_weight_average_by_hand():
    dwa = DynamicWeightAverage(TASKS, temperature=2.0)
    assert dwa.weights() == dict.fromkeys(TASKS, 1.0)
    dwa.end_epoch(dict.fromkeys(TASKS, 1.0))
    assert dwa.weights() == dict.fromkeys(TASKS, 1.0)  # needs two epochs of history
    dwa.end_epoch({"regression": 0.5, "breath_ce": 1.0, "breath_focal": 1.0, "noise_ce": 1.0})
    w = dwa.weights()
    denominator = math.exp(0.25) + 3 * math.exp(0.5)
    assert w["regression"] == pytest.approx(4 * math.exp(0.25) / denominator)
    assert w["noise_ce"] == pytest.approx(4 * math.exp(0.5) / denominator)
    assert sum(w.values()) == pytest.approx(4.0)


def test_mixture_is_convex_combination_of_tasks():
    cfg = TrainConfig(beta=0.4, gamma=0.3, kappa=0.2)
    loss = MultiTaskLoss(cfg, torch.ones(3), torch.ones(2))
    losses = {t: torch.tensor(float(i + 1)) for i, t in enumerate(TASKS)}
    weights = {"regression": 1.0, "breath_ce": 2.0, "breath_focal": 1.0, "noise_ce": 0.5}
    # beta*w*L_reg + gamma*w*L_ce + kappa*w*L_focal + (1 - beta - gamma - kappa)*w*L_noise
    expected = 0.4 * 1.0 * 1 + 0.3 * 2.0 * 2 + 0.2 * 1.0 * 3 + 0.1 * 0.5 * 4
    assert float(loss.total(losses, weights)) == pytest.approx(expected)


def test_config_rejects_non_convex_mixture():
    with pytest.raises(ValueError, match="beta"):
        TrainConfig(beta=0.7, gamma=0.3, kappa=0.2)
    with pytest.raises(ValueError, match="model_type"):
        TrainConfig(model_type="gru")


def test_rr_mse_term_adds_squared_error_of_standardised_rr():
    from training.models import ModelOutputs

    torch.manual_seed(0)
    out = ModelOutputs(
        torch.tensor([0.0, 1.0, 2.0]),
        torch.tensor([1.0, 2.0, 4.0]),
        torch.randn(3, 3),
        torch.randn(3, 2),
        torch.randn(3, 10, 3),
    )
    rr_z, rc = torch.tensor([0.5, 1.0, 1.0]), torch.tensor([1.0, 2.0, 3.0])
    breath, noisy = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 0])
    ones3, ones2 = torch.ones(3), torch.ones(2)
    plain = MultiTaskLoss(TrainConfig(), ones3, ones2).task_losses(out, rr_z, rc, breath, noisy)
    mixed = MultiTaskLoss(TrainConfig(rr_mse_weight=0.5), ones3, ones2)
    mixed = mixed.task_losses(out, rr_z, rc, breath, noisy)
    mse = (0.25 + 0.0 + 1.0) / 3
    assert float(mixed["regression"]) == pytest.approx(float(plain["regression"]) + 0.5 * mse, rel=1e-6)
    assert float(mixed["breath_ce"]) == float(plain["breath_ce"])


def test_paper_config_switches_off_our_options_and_bad_options_are_refused():
    paper = TrainConfig.paper(units=16)
    assert (paper.norm, paper.phase_weight) == ("global", 0.0)  # the paper's standardisation, no phase head
    assert (paper.frame_stride, paper.lr_schedule, paper.rr_mse_weight, paper.band_limit_prob) == (
        1,
        "constant",
        0.0,
        0.0,
    )
    assert paper.units == 16 and paper.lr == 0.01 and paper.batch_size == 64
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="frame_stride"):
        TrainConfig(frame_stride=0)
    round_trip = TrainConfig.from_dict(TrainConfig(band_limit_hz=[500.0, 2000.0]).to_dict())
    assert round_trip.band_limit_hz == (500.0, 2000.0)


def test_group_ccc_cost_is_the_mean_within_groups():
    from training.losses import group_ccc_cost

    pred = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0, 10.0, 10.0, 10.0, 5.0])
    true = torch.tensor([0.0, 1.0, 2.0, 3.0, 9.0, 10.0, 11.0, 12.0, 0.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2])  # group 2 has one item: too small, left out
    # group 0 is perfect (cost 0); group 1 predicts a constant: covariance 0, so CCC 0 and cost 1
    assert float(group_ccc_cost(pred, true, groups)) == pytest.approx(0.5)
    # over the whole batch the constant group hardly shows: the batch CCC is high
    assert float(ccc(pred[:8], true[:8])) > 0.9
    assert float(group_ccc_cost(pred[:3], true[:3], groups[:3])) == 0.0
