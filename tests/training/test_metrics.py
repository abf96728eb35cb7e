"""Each metric against a hand computation on small arrays, and degenerate input without warnings."""

import math

import numpy as np
import pytest

from training import metrics


def test_ccc_hand_computation():
    # means 2.5 and 3.5, population variances 1.25 each, covariance 1.25:
    # CCC = 2 * 1.25 / (1.25 + 1.25 + 1.0^2) = 2.5 / 3.5
    assert metrics.ccc([1, 2, 3, 4], [2, 3, 4, 5]) == pytest.approx(2.5 / 3.5)
    # Scale matters too: p = 2 t has var 5, cov 2.5, mean gap 2.5 -> 5 / (1.25 + 5 + 6.25)
    assert metrics.ccc([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(5.0 / 12.5)


def test_ccc_perfect_and_negated():
    t = np.array([12.0, 15.0, 9.0, 30.0, 21.0])
    assert metrics.ccc(t, t) == pytest.approx(1.0)
    assert metrics.ccc(t, 2 * t.mean() - t) == pytest.approx(-1.0)  # mirrored about the mean


def test_ccc_degenerate():
    with np.errstate(all="raise"):
        assert math.isnan(metrics.ccc([], []))
        assert metrics.ccc([5.0, 5.0, 5.0], [5.0, 5.0, 5.0]) == 1.0  # identical constants agree
        assert metrics.ccc([5.0], [5.0]) == 1.0
        assert metrics.ccc([5.0], [7.0]) == 0.0  # n = 1, unequal: no covariance, denominator 4
        assert metrics.ccc([5.0, 5.0, 5.0], [4.0, 5.0, 6.0]) == 0.0  # constant vs varying
    with pytest.raises(ValueError, match="3 values"):
        metrics.ccc([1, 2, 3], [1, 2])


def test_pearson_hand_computation_and_degenerate():
    # deviations (-1, 0, 1) and (-1, 1, 0): sum of products 1, norms sqrt(2) each -> 0.5
    assert metrics.pearson_r([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert metrics.pearson_r([1, 2, 3], [3 - 2, 3 - 4, 3 - 6]) == pytest.approx(-1.0)
    with np.errstate(all="raise"):
        assert math.isnan(metrics.pearson_r([1.0], [2.0]))
        assert math.isnan(metrics.pearson_r([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]))
        assert math.isnan(metrics.pearson_r([], []))


def test_errors_in_bpm_and_z_units():
    t, p = [10.0, 20.0], [12.0, 17.0]  # errors +2 and -3
    assert metrics.mae(t, p) == pytest.approx(2.5)
    assert metrics.rmse(t, p) == pytest.approx(math.sqrt(6.5))
    assert metrics.mse(t, p) == pytest.approx(6.5)
    # z units with the training std 5: errors 0.4 and -0.6 -> (0.16 + 0.36) / 2
    assert metrics.mse_z(t, p, train_mean=15.0, train_std=5.0) == pytest.approx(0.26)
    with pytest.raises(ValueError, match="train_std"):
        metrics.mse_z(t, p, 15.0, 0.0)
    with np.errstate(all="raise"):
        assert math.isnan(metrics.mae([], []))
        assert math.isnan(metrics.rmse([], []))
        assert math.isnan(metrics.mse_z([], [], 15.0, 5.0))


def test_bland_altman():
    ba = metrics.bland_altman([10.0, 12.0, 14.0], [11.0, 12.0, 16.0])  # diffs 1, 0, 2
    assert ba.n == 3
    assert ba.bias == pytest.approx(1.0)
    assert ba.sd == pytest.approx(1.0)  # sample sd of (1, 0, 2)
    assert (ba.loa_low, ba.loa_high) == pytest.approx((1.0 - 1.96, 1.0 + 1.96))
    with np.errstate(all="raise"):
        one = metrics.bland_altman([10.0], [13.0])
        assert one.bias == 3.0 and math.isnan(one.sd) and math.isnan(one.loa_high)
        assert metrics.bland_altman([], []).n == 0


def test_rr_ranges_table_iii():
    assert [metrics.rr_range_of(v) for v in (14.99, 15.0, 25.0, 25.01)] == ["<15", "15-25", "15-25", ">25"]
    t = np.array([10.0, 12.0, 20.0, 40.0])
    p = np.array([11.0, 12.0, 18.0, 40.0])
    out = metrics.mse_z_by_rr_range(t, p, train_mean=20.0, train_std=2.0)
    assert out["<15"] == {"n": 2, "mse_z": pytest.approx((0.5**2 + 0.0) / 2)}
    assert out["15-25"] == {"n": 1, "mse_z": pytest.approx(1.0)}
    assert out[">25"] == {"n": 1, "mse_z": pytest.approx(0.0)}
    empty = metrics.mse_z_by_rr_range(t[:1], p[:1], 20.0, 2.0)
    assert empty[">25"]["n"] == 0 and math.isnan(empty[">25"]["mse_z"])


def test_confusion_and_macro_f1_worked_example():
    true = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    pred = [0, 0, 1, 1, 2, 2, 2, 2, 0]
    cm = metrics.confusion_matrix(true, pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    # F1 = 2TP / (2TP + FP + FN): class 0: 4/6, class 1: 2/4, class 2: 6/8
    assert metrics.f1_per_class(cm) == pytest.approx([4 / 6, 2 / 4, 6 / 8])
    assert metrics.macro_f1(true, pred, 3) == pytest.approx((4 / 6 + 0.5 + 0.75) / 3)


def test_macro_f1_absent_classes_and_degenerate():
    # class 2 neither occurs nor is predicted: left out of the mean (scikit-learn's default)
    assert metrics.macro_f1([0, 0, 1], [0, 0, 1], 3) == 1.0
    # class 2 predicted but absent from the truth: its F1 is 0 and counts
    assert metrics.macro_f1([0, 0], [0, 2], 3) == pytest.approx((2 / 3 + 0.0) / 2)
    assert metrics.macro_f1([1, 0], [0, 1], 2) == 0.0
    with np.errstate(all="raise"):
        assert math.isnan(metrics.macro_f1([], [], 3))
    with pytest.raises(ValueError, match=r"0\.\.2"):
        metrics.macro_f1([0, 3], [0, 1], 3)


def test_regression_summary_keys():
    out = metrics.regression_summary([10.0, 20.0, 30.0], [11.0, 19.0, 33.0], 20.0, 10.0)
    assert out["n"] == 3
    assert out["ccc"] == pytest.approx(metrics.ccc([10, 20, 30], [11, 19, 33]))
    assert out["mae_bpm"] == pytest.approx(5.0 / 3)
    assert set(out) == {"n", "ccc", "pearson", "mse_z", "mae_bpm", "rmse_bpm"}
