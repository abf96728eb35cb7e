"""Checkpoints: the weights plus everything needed to use them correctly later.

A checkpoint holds the weights, the training config, the front-end parameters, the label normalisation,
the package version and a training summary. Loading refuses a checkpoint made with other front-end
parameters: its weights would silently see features they were never trained on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from training import __version__
from training.config import TrainConfig
from training.frontend import DEFAULT_FRONTEND, FrontEndConfig, check_frontend
from training.models import RRModel

DEFAULT_CHECKPOINT = Path(__file__).parent / "default_model" / "tclstm32.pt"


class CheckpointError(ValueError):
    """The file is not a usable Respira checkpoint (message says why)."""


def save_checkpoint(
    path: Path | str,
    model: RRModel,
    cfg: TrainConfig,
    frontend: FrontEndConfig = DEFAULT_FRONTEND,
    summary: dict | None = None,
    estimator: dict | None = None,
) -> Path:
    """Write the checkpoint; ``estimator`` holds the settings of :class:`training.estimator.EstimatorConfig`
    chosen for this model on validation data (absent: the defaults)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "respira-checkpoint/1",
        "package_version": __version__,
        "weights": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": cfg.to_dict(),
        "frontend": frontend.to_dict(),
        "model": model.describe(),
        "label_norm": {"rr_mean": float(model.rr_mean), "rr_std": float(model.rr_std)},
        "summary": summary or {},
        "estimator": estimator or {},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(
    path: Path | str | None = None, expected_frontend: FrontEndConfig = DEFAULT_FRONTEND
) -> tuple[RRModel, dict]:
    """Model (in eval mode) and the checkpoint's metadata; ``None`` loads the shipped default model."""
    path = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a non-checkpoint file
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != "respira-checkpoint/1":
        raise CheckpointError(f"{path}: not a Respira checkpoint (no 'respira-checkpoint/1' format tag)")
    check_frontend(expected_frontend, payload["frontend"], f"checkpoint {path}")
    cfg = TrainConfig.from_dict(payload["config"])
    # the saved model description is the truth (a config may be saved beside a hand-built model);
    # checkpoints from before the stride and norm options ran at stride 1 with global standardisation
    described = payload.get("model", {})
    cfg.frame_stride = int(described.get("frame_stride", payload["config"].get("frame_stride", 1)))
    cfg.norm = described.get("norm", "global")
    cfg.norm_time_constant_s = float(described.get("norm_time_constant_s", cfg.norm_time_constant_s))
    model = RRModel.from_config(cfg, expected_frontend)
    missing = sorted(set(model.state_dict()) - set(payload["weights"]))
    if missing:
        raise CheckpointError(
            f"{path}: made by an older Respira without {', '.join(missing)}; retrain it "
            "(scripts/train-default-model shows how)"
        )
    model.load_state_dict(payload["weights"])
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "weights"}
    meta["path"] = str(path)
    meta["sha256"] = file_sha256(path)
    return model, meta


def rewrite_estimator(path: Path | str, estimator: dict, calibration: dict) -> Path:
    """Replace a checkpoint's estimator settings (and their calibration summary), weights untouched."""
    path = Path(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload["estimator"] = estimator
    payload.setdefault("summary", {})["estimator_calibration"] = calibration
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
