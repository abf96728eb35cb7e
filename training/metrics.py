"""Evaluation metrics of the paper (and a few more), on plain numpy arrays.

Regression of respiratory rate (RR):
- :func:`ccc`: Lin's concordance correlation coefficient, the paper's headline number. It rewards
  agreement, not just correlation: a prediction that is off by a constant or a scale loses.
- :func:`pearson_r`: linear correlation (Table I reports it beside CCC).
- :func:`mse_z`: MSE of RR after z-normalising truth and prediction with the TRAINING labels' mean and
  standard deviation. The paper's MSE of about 0.2 is only plausible in these units (in breaths/min
  squared it would be tiny for any real model), so its tables are reproduced this way.
- :func:`mae`, :func:`rmse`: errors in breaths/min, the units a user and the product goals speak.
- :func:`bland_altman`: bias and 95% limits of agreement of prediction minus truth.
- :func:`mse_z_by_rr_range`: Table III's MSE per true-RR range (<15, 15-25, >25 breaths/min).

Classification: :func:`confusion_matrix` and :func:`macro_f1` (breath 3-class, noise 2-class).

Degenerate input never raises nor warns: with no samples every metric is ``nan``; a correlation that is
undefined (n < 2, or a constant array where the formula divides by zero) is ``nan``, except that CCC
of two identical constant arrays is 1 (perfect agreement: the squared differences are all zero) and
CCC of a constant against a varying array is 0 (the covariance is zero, the denominator is not).
Shapes must match; arrays are flattened; non-finite values are the caller's business (the report
drops rows whose prediction is missing and says how many).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# Table III of the paper: MSE by range of the true rate, "<15", "15-25" and ">25" breaths/min. The paper
# writes the middle range as 15-25, so both 15 and 25 belong to it (see :func:`rr_range_of`).
RR_RANGES: tuple[str, ...] = ("<15", "15-25", ">25")

# 1.96 standard deviations hold 95% of a normal distribution: Bland and Altman's limits of agreement.
LOA_Z = 1.96


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    return t, p


def ccc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Lin's CCC = 2 cov / (var_t + var_p + (mean_t - mean_p)^2), population (1/n) moments.

    1 for perfect agreement, -1 for ``y_pred = 2 mean - y_true``, 0 without covariance. ``nan`` for no
    samples; 1 for identical constant arrays (including n = 1 with equal values); 0 for n = 1 unequal.
    """
    t, p = _pair(y_true, y_pred)
    if t.size == 0:
        return math.nan
    mt, mp = t.mean(), p.mean()
    var_t, var_p = ((t - mt) ** 2).mean(), ((p - mp) ** 2).mean()
    cov = ((t - mt) * (p - mp)).mean()
    denom = var_t + var_p + (mt - mp) ** 2
    if denom <= 0.0:
        return 1.0  # both constant and equal: every squared difference is zero
    return float(2.0 * cov / denom)


def pearson_r(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Pearson's r; ``nan`` when n < 2 or either array is constant (r is undefined there)."""
    t, p = _pair(y_true, y_pred)
    if t.size < 2:
        return math.nan
    dt, dp = t - t.mean(), p - p.mean()
    ss = math.sqrt(float((dt * dt).sum()) * float((dp * dp).sum()))
    if ss == 0.0:
        return math.nan
    return float(np.clip((dt * dp).sum() / ss, -1.0, 1.0))


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean squared error in the arrays' own units; ``nan`` for no samples."""
    t, p = _pair(y_true, y_pred)
    return float(((p - t) ** 2).mean()) if t.size else math.nan


def mse_z(y_true: np.ndarray, y_pred: np.ndarray, train_mean: float, train_std: float) -> float:
    """MSE after z-normalising both arrays with the training labels' mean and std (the paper's MSE).

    The mean cancels in the difference; it is taken anyway so the call reads like the normalisation.
    """
    if not (math.isfinite(train_std) and train_std > 0.0):
        raise ValueError(f"train_std must be a positive number, not {train_std!r}")
    t, p = _pair(y_true, y_pred)
    return mse((t - train_mean) / train_std, (p - train_mean) / train_std)


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error; ``nan`` for no samples."""
    t, p = _pair(y_true, y_pred)
    return float(np.abs(p - t).mean()) if t.size else math.nan


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error; ``nan`` for no samples."""
    value = mse(y_true, y_pred)
    return math.sqrt(value) if math.isfinite(value) else math.nan


@dataclasses.dataclass(frozen=True)
class BlandAltman:
    """Agreement of prediction with truth: ``diff = pred - true``.

    ``bias`` is the mean difference, ``sd`` its sample standard deviation (ddof 1; ``nan`` for n < 2),
    and the limits of agreement are ``bias -/+ 1.96 sd``.
    """

    n: int
    bias: float
    sd: float
    loa_low: float
    loa_high: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def bland_altman(y_true: np.ndarray, y_pred: np.ndarray) -> BlandAltman:
    t, p = _pair(y_true, y_pred)
    n = int(t.size)
    if n == 0:
        return BlandAltman(0, math.nan, math.nan, math.nan, math.nan)
    diff = p - t
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if n >= 2 else math.nan
    return BlandAltman(n, bias, sd, bias - LOA_Z * sd, bias + LOA_Z * sd)


def rr_range_of(rr_bpm: float) -> str:
    """The Table III range of a true rate: "<15", "15-25" (both ends included) or ">25"."""
    if rr_bpm < 15.0:
        return "<15"
    return "15-25" if rr_bpm <= 25.0 else ">25"


def mse_z_by_rr_range(
    y_true: np.ndarray, y_pred: np.ndarray, train_mean: float, train_std: float
) -> dict[str, dict[str, float]]:
    """Table III: ``{range: {"n": count, "mse_z": value}}`` for each range, ``nan`` where empty."""
    t, p = _pair(y_true, y_pred)
    ranges = np.array([rr_range_of(v) for v in t], dtype=object)
    out: dict[str, dict[str, float]] = {}
    for name in RR_RANGES:
        keep = ranges == name
        out[name] = {"n": int(keep.sum()), "mse_z": mse_z(t[keep], p[keep], train_mean, train_std)}
    return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[n_classes, n_classes]``: row = true class, column = predicted class (integer labels)."""
    t = np.asarray(y_true).reshape(-1)
    p = np.asarray(y_pred).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    if t.size and (t.min() < 0 or p.min() < 0 or t.max() >= n_classes or p.max() >= n_classes):
        raise ValueError(f"labels must be integers in 0..{n_classes - 1}")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t.astype(np.int64), p.astype(np.int64)), 1)
    return cm


def f1_per_class(cm: np.ndarray) -> np.ndarray:
    """F1 = 2 TP / (2 TP + FP + FN) per class; ``nan`` for a class absent from truth and prediction."""
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = 2.0 * tp + fp + fn
    out = np.full(cm.shape[0], math.nan)
    present = denom > 0
    out[present] = 2.0 * tp[present] / denom[present]
    return out


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean F1 over the classes that occur in the truth or the prediction.

    This is scikit-learn's ``f1_score(average="macro")`` with its default labels: a class that nobody
    has and nobody predicts says nothing about the classifier, so it is left out rather than scored 0.
    ``nan`` for no samples.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
    f1 = f1_per_class(cm)
    present = ~np.isnan(f1)
    return float(f1[present].mean()) if present.any() else math.nan


def regression_summary(
    y_true: np.ndarray, y_pred: np.ndarray, train_mean: float, train_std: float
) -> dict[str, float]:
    """Every RR regression number the report prints, in one dict (keys are the JSON names)."""
    t, p = _pair(y_true, y_pred)
    return {
        "n": int(t.size),
        "ccc": ccc(t, p),
        "pearson": pearson_r(t, p),
        "mse_z": mse_z(t, p, train_mean, train_std),
        "mae_bpm": mae(t, p),
        "rmse_bpm": rmse(t, p),
    }
