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
) -> Path:
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
    # checkpoints from before the stride option have neither field and ran at stride 1
    frame_stride = payload.get("model", {}).get("frame_stride", payload["config"].get("frame_stride", 1))
    model = RRModel(
        cfg.model_type,
        cfg.units,
        expected_frontend.n_mels,
        cfg.conv_kernel,
        expected_frontend.frames_per_second,
        int(frame_stride),
    )
    model.load_state_dict(payload["weights"])
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "weights"}
    meta["path"] = str(path)
    meta["sha256"] = file_sha256(path)
    return model, meta


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
