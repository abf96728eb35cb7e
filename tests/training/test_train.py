"""Training end to end on small stand-in data: learning happens, runs are reproducible, checkpoints are safe."""

import dataclasses

import numpy as np
import pytest
import torch

from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.dataset import Example, segment_frames
from training.frontend import DEFAULT_FRONTEND, FrontEndConfig, FrontEndMismatchError, log_mel
from training.manifest import Segment, breath_class_for
from training.train import predict, train


def _examples(n: int, split: str, seed: int) -> list[Example]:
    """Frames whose first mel band pulses at the label's rate: learnable, like a breath envelope."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        frames = int(rng.integers(300, 500))
        rr = float(rng.uniform(8, 45))
        t = np.arange(frames) / 100.0
        feats = rng.normal(0, 0.3, (frames, 40)).astype(np.float32)
        feats[:, :20] += (3 * (np.sin(2 * np.pi * rr / 60 * t) > 0.3)).astype(np.float32)[:, None]
        seg = Segment("x.flac", 0.0, frames / 100, rr, rr * frames / 6000, breath_class_for(rr),
                      int(rng.integers(0, 2)), participant=f"{split}{i % 7}", split=split)
        out.append(Example(seg, None, feats))
    return out


@pytest.fixture(scope="module")
def data():
    return _examples(192, "train", 0), _examples(64, "val", 1)


def test_training_learns_and_checkpoint_round_trips(tmp_path, data):
    cfg = TrainConfig(max_epochs=6, patience=6, batch_size=32, seed=3)
    summary = train(cfg, [], tmp_path / "m.pt", progress=False, train_examples=data[0], val_examples=data[1])
    assert summary["val_ccc_rr"] > 0.3  # random guessing gives ~0
    assert 1 <= summary["best_epoch"] <= summary["epochs_run"] <= 6
    model, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["config"]["units"] == 32 and meta["frontend"] == DEFAULT_FRONTEND.to_dict()
    assert meta["label_norm"]["rr_std"] > 0 and meta["package_version"]
    assert len(meta["sha256"]) == 64
    pred = predict(model, data[1])
    assert pred["breath_probs"].shape == (64, 3)
    assert np.allclose(pred["breath_probs"].sum(axis=1), 1.0, atol=1e-5)


def test_training_is_reproducible(tmp_path, data):
    cfg = TrainConfig(max_epochs=2, batch_size=32, seed=7, model_type="lstm", units=16)
    for name in ("a.pt", "b.pt"):
        train(cfg, [], tmp_path / name, progress=False, train_examples=data[0], val_examples=data[1])
    a = torch.load(tmp_path / "a.pt", weights_only=True)["weights"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["weights"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_stops(tmp_path, data):
    cfg = TrainConfig(max_epochs=30, patience=1, batch_size=64, lr=0.0, seed=0)  # lr 0: nothing improves
    summary = train(cfg, [], tmp_path / "m.pt", progress=False, train_examples=data[0], val_examples=data[1])
    assert summary["best_epoch"] == 1 and summary["epochs_run"] == 2


def test_checkpoint_with_other_frontend_is_refused(tmp_path):
    from training.models import RRModel

    other = dataclasses.replace(DEFAULT_FRONTEND, n_mels=64)
    save_checkpoint(tmp_path / "m.pt", RRModel(), TrainConfig(), frontend=other)
    with pytest.raises(FrontEndMismatchError, match="n_mels: 40 != 64"):
        load_checkpoint(tmp_path / "m.pt")


def test_not_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_segment_frames_equal_frontend_on_the_segment_alone():
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, 16000 * 10).astype(np.float32)
    whole = log_mel(audio)
    cfg: FrontEndConfig = DEFAULT_FRONTEND
    for start_s, end_s in [(1.0, 5.5), (2.34, 8.0), (0.0, 4.0)]:
        alone = log_mel(audio[round(start_s * 16000) : round(end_s * 16000)])
        sliced = segment_frames(whole, start_s, end_s, cfg)
        assert sliced.shape == alone.shape
        assert np.abs(sliced - alone).max() < 1e-4
