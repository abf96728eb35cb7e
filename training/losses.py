"""The paper's multi-task loss: CCC cost, weighted cross-entropy, focal loss, dynamic weight averaging.

- CCC cost: ``1 - CCC(pred, true)`` over the batch (Lin's concordance correlation), for RR and RC, mixed
  by ``alpha``. It rewards agreement in both correlation and scale, which is what the paper reports.
- Weighted cross-entropy for breath (3 classes) and noise (2 classes), class weights from the training
  frequencies (``n / (k * count)``, so a balanced set gets weight 1 everywhere).
- Focal loss on breath (Lin et al. 2017): ``-(1 - p_t)^g log p_t``, weighted like the cross-entropy.
- Dynamic weight averaging (Liu et al. 2019): each task's weight follows how fast its loss fell over the
  last two epochs, ``K softmax(L_k(t-1) / L_k(t-2) / T)``; the first two epochs weigh all tasks 1.
- The convex mixture: ``beta`` regression, ``gamma`` breath CE, ``kappa`` breath focal, the rest noise CE.
- Ours: ``rr_mse_weight`` adds the mean squared error of standardised RR to the regression term, and
  ``rr_group_ccc_weight`` the mean CCC cost of RR within each source (corpus) of the batch (see
  :class:`training.config.TrainConfig`); 0 is the paper.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from training.config import TrainConfig

if TYPE_CHECKING:
    from training.models import ModelOutputs

TASKS = ("regression", "breath_ce", "breath_focal", "noise_ce")


def ccc(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Lin's concordance correlation coefficient (population moments)."""
    pred_mean, true_mean = pred.mean(), true.mean()
    covariance = ((pred - pred_mean) * (true - true_mean)).mean()
    denominator = pred.var(unbiased=False) + true.var(unbiased=False) + (pred_mean - true_mean) ** 2
    return 2.0 * covariance / denominator.clamp_min(1e-8)


def ccc_cost(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    return 1.0 - ccc(pred, true)


def group_ccc_cost(
    pred: torch.Tensor, true: torch.Tensor, groups: torch.Tensor, min_size: int = 4
) -> torch.Tensor:
    """Mean of ``1 - CCC`` within each group (an int label per item) that has at least ``min_size`` items.

    A CCC over the whole batch is high as soon as the wide-range group is right; within each group it
    also asks the narrow-range group to be tracked. No group big enough: zero.
    """
    costs = [
        ccc_cost(pred[groups == g], true[groups == g])
        for g in torch.unique(groups)
        if int((groups == g).sum()) >= min_size
    ]
    return torch.stack(costs).mean() if costs else pred.sum() * 0.0


def class_weights(counts: list[int] | torch.Tensor) -> torch.Tensor:
    """``n / (k * count_c)`` per class; classes absent from training get weight 0 (nothing to learn)."""
    counts = torch.as_tensor(counts, dtype=torch.float32)
    present = counts > 0
    weights = torch.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``w[y] * -log softmax(logits)[y]`` normalised by the sum of the weights (as torch does)."""
    return nn.functional.cross_entropy(logits, target, weight=weights)


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, focus: float = 2.0
) -> torch.Tensor:
    log_p = torch.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
    w = weights[target]
    loss = -w * (1.0 - log_p.exp()) ** focus * log_p
    return loss.sum() / w.sum().clamp_min(1e-8)


class DynamicWeightAverage:
    """Task weights from the ratio of each task's mean loss over the two previous epochs."""

    def __init__(self, tasks: tuple[str, ...] = TASKS, temperature: float = 2.0) -> None:
        self.tasks = tasks
        self.temperature = temperature
        self.history: list[dict[str, float]] = []

    def weights(self) -> dict[str, float]:
        if len(self.history) < 2:
            return dict.fromkeys(self.tasks, 1.0)
        last, before = self.history[-1], self.history[-2]
        ratios = {t: last[t] / before[t] if before[t] > 0 else 1.0 for t in self.tasks}
        exps = {t: math.exp(r / self.temperature) for t, r in ratios.items()}
        total = sum(exps.values())
        return {t: len(self.tasks) * e / total for t, e in exps.items()}

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        self.history.append(dict(mean_losses))


class MultiTaskLoss:
    """Per-batch task losses and their DWA-weighted convex mixture."""

    def __init__(self, cfg: TrainConfig, breath_weights: torch.Tensor, noise_weights: torch.Tensor) -> None:
        self.cfg = cfg
        self.breath_weights = breath_weights
        self.noise_weights = noise_weights
        self.mixture = {
            "regression": cfg.beta,
            "breath_ce": cfg.gamma,
            "breath_focal": cfg.kappa,
            "noise_ce": cfg.noise_weight,
        }

    def task_losses(
        self,
        outputs: ModelOutputs,
        rr_z: torch.Tensor,
        rc: torch.Tensor,
        breath: torch.Tensor,
        noisy: torch.Tensor,
        groups: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-task losses of a batch; ``groups`` [B] (int source of each item) is needed only for
        ``rr_group_ccc_weight``."""
        cfg = self.cfg
        regression = cfg.alpha * ccc_cost(outputs.rr_z, rr_z) + (1 - cfg.alpha) * ccc_cost(outputs.rc, rc)
        if cfg.rr_mse_weight:
            regression = regression + cfg.rr_mse_weight * nn.functional.mse_loss(outputs.rr_z, rr_z)
        if cfg.rr_group_ccc_weight and groups is not None:
            regression = regression + cfg.rr_group_ccc_weight * group_ccc_cost(outputs.rr_z, rr_z, groups)
        return {
            "regression": regression,
            "breath_ce": weighted_cross_entropy(outputs.breath_logits, breath, self.breath_weights),
            "breath_focal": focal_loss(outputs.breath_logits, breath, self.breath_weights, cfg.focal_gamma),
            "noise_ce": weighted_cross_entropy(outputs.noise_logits, noisy, self.noise_weights),
        }

    def total(self, losses: dict[str, torch.Tensor], dwa_weights: dict[str, float]) -> torch.Tensor:
        return cast(
            torch.Tensor, sum(self.mixture[t] * dwa_weights[t] * losses[t] for t in TASKS)
        )  # TASKS: not empty


# -- frame-level phase (ours) ---------------------------------------------------------------------------


def phase_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the phase head [B, S, 3] against step labels [B, S] (-1 = no label).

    Classes are weighted by inverse frequency in the batch, so the long "other" stretches of a slow
    breath do not drown the inhales.
    """
    steps = min(logits.shape[1], labels.shape[1])
    logits, labels = logits[:, :steps], labels[:, :steps]
    known = labels >= 0
    if not known.any():
        return logits.sum() * 0.0
    counts = torch.bincount(labels[known], minlength=logits.shape[-1]).to(logits.dtype)
    weights = class_weights(counts)
    return nn.functional.cross_entropy(logits[known], labels[known], weight=weights)


def _lagged_correlation(x: torch.Tensor, valid: torch.Tensor, lag: torch.Tensor) -> torch.Tensor:
    """Biased normalised autocorrelation of each row of ``x`` [B, S] at a fractional ``lag`` [B]."""
    x = (x - (x * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1)) * valid
    energy = (x * x).sum(1).clamp_min(1e-6)
    steps = x.shape[1]
    out = []
    for row in range(x.shape[0]):
        lo = int(torch.floor(lag[row]))
        frac = lag[row] - lo
        values = []
        for k in (lo, lo + 1):
            values.append((x[row, : steps - k] * x[row, k:]).sum() if 0 < k < steps else x.new_zeros(()))
        out.append(((1 - frac) * values[0] + frac * values[1]) / energy[row])
    return torch.stack(out)


def periodicity_loss(
    logits: torch.Tensor, period_steps: torch.Tensor, lengths_steps: torch.Tensor
) -> torch.Tensor:
    """For windows with a known breathing period ``P`` (steps; 0 = unknown): the phase signal
    ``p(inhale) - p(exhale)`` should repeat every ``P`` and be opposite half a period later.

    Loss per window: ``(1 - r(P)) + (1 + r(P / 2)) / 2``, with ``r`` the normalised autocorrelation.
    It supervises real recordings whose rate is known (paced) but whose breath phases are not.
    """
    chosen = period_steps > 0
    if not chosen.any():
        return logits.sum() * 0.0
    probs = torch.softmax(logits[chosen], -1)
    phase = probs[..., 0] - probs[..., 1]
    valid = (torch.arange(phase.shape[1])[None, :] < lengths_steps[chosen][:, None]).to(phase.dtype)
    period = period_steps[chosen]
    r_full = _lagged_correlation(phase, valid, period)
    r_half = _lagged_correlation(phase, valid, period / 2)
    return ((1 - r_full) + 0.5 * (1 + r_half)).mean()


def activity_loss(logits: torch.Tensor, breathing: torch.Tensor, lengths_steps: torch.Tensor) -> torch.Tensor:
    """Windows where someone breathes throughout should sound like breathing at least a third of the
    time (mean ``p(inhale) + p(exhale)`` >= 1/3); a hinge, so it asks no more than that."""
    chosen = breathing == 1
    if not chosen.any():
        return logits.sum() * 0.0
    probs = torch.softmax(logits[chosen], -1)
    activity = probs[..., 0] + probs[..., 1]
    valid = (torch.arange(activity.shape[1])[None, :] < lengths_steps[chosen][:, None]).to(activity.dtype)
    mean_activity = (activity * valid).sum(1) / valid.sum(1).clamp_min(1)
    return torch.relu(1.0 / 3.0 - mean_activity).mean()
