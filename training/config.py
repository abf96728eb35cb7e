"""One dataclass that holds every training hyper-parameter, with the paper's defaults.

Kumar, Mitra et al., EMBC 2021 (arXiv 2107.14028): TC-LSTM with 32 units, Adam (lr 0.01, beta1 0.9),
batch 64, best epoch by validation CCC of RR, early stopping. Loss: CCC cost on RR and RC mixed by
``alpha``; class-weighted cross-entropy on breath and noise and focal loss on breath; the four terms
balanced by dynamic weight averaging and mixed convexly by ``beta`` (regression), ``gamma`` (breath
cross-entropy), ``kappa`` (breath focal) and ``1 - beta - gamma - kappa`` (noise cross-entropy).
The paper does not print its mixture weights; ours are documented defaults chosen on validation data.
"""

from __future__ import annotations

import dataclasses

from training.manifest import HEAVY_THRESHOLD_BPM


@dataclasses.dataclass
class TrainConfig:
    # model
    model_type: str = "tclstm"  # "tclstm" (Conv1d -> LSTM) or "lstm" (the paper's comparison model)
    units: int = 32  # LSTM units; the breath embedding has as many, the noise embedding a quarter
    conv_kernel: int = 3  # causal time convolution, as many filters as features
    # optimisation
    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    batch_size: int = 64
    max_epochs: int = 40
    patience: int = 8  # early stopping: epochs without a better validation CCC of RR
    grad_clip: float = 1.0
    seed: int = 0
    # loss mixture
    alpha: float = 0.7  # weight of RR in the CCC cost; RC gets 1 - alpha
    beta: float = 0.6  # regression (CCC cost)
    gamma: float = 0.15  # breath class, weighted cross-entropy
    kappa: float = 0.15  # breath class, focal loss; noise cross-entropy gets 1 - beta - gamma - kappa
    focal_gamma: float = 2.0
    dwa_temperature: float = 2.0
    # labels
    heavy_threshold_bpm: float = HEAVY_THRESHOLD_BPM
    # limits (training-time budget guards; 0 = no limit)
    max_train_minutes: float = 0.0

    def __post_init__(self) -> None:
        if self.model_type not in ("tclstm", "lstm"):
            raise ValueError(f"model_type must be 'tclstm' or 'lstm', not {self.model_type!r}")
        if self.units < 4:
            raise ValueError(f"units must be at least 4, not {self.units}")
        rest = 1.0 - self.beta - self.gamma - self.kappa
        if min(self.beta, self.gamma, self.kappa, rest) < 0:
            raise ValueError("beta, gamma, kappa and 1 - beta - gamma - kappa must all be >= 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError("alpha must be in [0, 1]")

    @property
    def noise_weight(self) -> float:
        return 1.0 - self.beta - self.gamma - self.kappa

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
