"""Training end to end on small stand-in data: it learns, reproduces, and writes safe checkpoints."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.dataset import Example, segment_frames
from training.frontend import DEFAULT_FRONTEND, SAMPLE_RATE_HZ, FrontEndConfig, FrontEndMismatchError
from training.logmel import log_mel
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
        seg = Segment(
            "x.flac",
            0.0,
            frames / 100,
            rr,
            rr * frames / 6000,
            breath_class_for(rr),
            int(rng.integers(0, 2)),
            participant=f"{split}{i % 7}",
            split=split,
        )
        out.append(Example(seg, None, feats))
    return out


@pytest.fixture(scope="module")
def data():
    return _examples(192, "train", 0), _examples(64, "val", 1)


def test_training_learns_and_checkpoint_round_trips(tmp_path, data):
    cfg = TrainConfig(max_epochs=6, patience=6, batch_size=32, seed=3, phase_weight=0.0)
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
    cfg = TrainConfig(max_epochs=2, batch_size=32, seed=7, model_type="lstm", units=16, phase_weight=0.0)
    for name in ("a.pt", "b.pt"):
        train(cfg, [], tmp_path / name, progress=False, train_examples=data[0], val_examples=data[1])
    a = torch.load(tmp_path / "a.pt", weights_only=True)["weights"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["weights"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_stops(tmp_path, data):
    cfg = TrainConfig(
        max_epochs=30, patience=1, batch_size=64, lr=0.0, seed=0, phase_weight=0.0
    )  # lr 0: nothing improves
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
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_segment_frames_equal_frontend_on_the_segment_alone():
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, 16000 * 10).astype(np.float32)
    whole = log_mel(audio)
    cfg: FrontEndConfig = DEFAULT_FRONTEND
    for start_s, end_s in [(1.0, 5.5), (2.34, 8.0), (0.0, 4.0)]:
        alone = log_mel(audio[round(start_s * SAMPLE_RATE_HZ) : round(end_s * SAMPLE_RATE_HZ)])
        sliced = segment_frames(whole, start_s, end_s, cfg)
        assert sliced.shape == alone.shape
        assert np.abs(sliced - alone).max() < 1e-4


def test_plateau_schedule_decays_only_when_validation_stalls():
    from training.train import make_scheduler

    cfg = TrainConfig(lr=0.01, lr_schedule="plateau", lr_decay_factor=0.5, lr_decay_patience=1, lr_min=1e-3)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = make_scheduler(cfg, optimizer)
    lrs = []
    for val_ccc in [0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]:
        scheduler.step(val_ccc)
        lrs.append(optimizer.param_groups[0]["lr"])
    # stalls of 2 epochs (patience 1) halve the rate; an improvement resets the count; floor at lr_min
    assert lrs[:5] == [0.01, 0.01, 0.01, 0.005, 0.005]
    assert lrs[6] == 0.0025 and lrs[-1] == pytest.approx(1e-3)
    assert make_scheduler(TrainConfig.paper(), optimizer) is None  # the paper's constant rate


def test_cosine_schedule_reaches_lr_min_at_max_epochs():
    from training.train import make_scheduler

    cfg = TrainConfig(lr=0.01, lr_schedule="cosine", max_epochs=10, lr_min=1e-4)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = make_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(10):
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert all(a > b for a, b in itertools.pairwise(lrs))
    assert lrs[4] == pytest.approx((0.01 + 1e-4) / 2, rel=1e-6) and lrs[-1] == pytest.approx(1e-4)


def test_band_limit_attenuates_only_above_the_cutoff():
    from training.dataset import band_limit, mel_band_centers_hz

    rng = np.random.default_rng(0)
    feats = rng.normal(0.0, 1.0, (50, 40)).astype(np.float32)  # loud: the floor is negligible
    feats[:, 5] = np.log(DEFAULT_FRONTEND.log_floor)  # a silent band stays silent
    limited = band_limit(feats, 2000.0, octave_db=24.0)
    centers = mel_band_centers_hz()
    below, octave_up = centers <= 2000.0, np.argmin(np.abs(centers - 4000.0))
    assert np.allclose(limited[:, below], feats[:, below], atol=1e-4)
    assert np.allclose(limited[:, 5], feats[:, 5])
    # 24 dB less energy per octave above the cutoff, i.e. log(10^-2.4) per octave in the log domain
    gain, floor = 10 ** (-24 * np.log2(centers[octave_up] / 2000.0) / 10), DEFAULT_FRONTEND.log_floor
    expected = np.log(gain * (np.exp(feats[:, octave_up].astype(np.float64)) - floor) + floor)
    assert 0.0025 < gain < 0.0045  # about 24 dB down near one octave up (band centre 4139 Hz)
    assert np.allclose(limited[:, octave_up], expected, atol=1e-3)
    assert limited.dtype == np.float32


def test_strided_model_trains_and_round_trips(tmp_path, data):
    cfg = TrainConfig(
        max_epochs=3,
        patience=3,
        batch_size=32,
        seed=1,
        frame_stride=5,
        lr_schedule="plateau",
        rr_mse_weight=0.3,
        phase_weight=0.0,
    )
    summary = train(cfg, [], tmp_path / "s.pt", progress=False, train_examples=data[0], val_examples=data[1])
    assert summary["val_ccc_rr"] > 0.3 and all("lr" in h for h in summary["history"])
    model, meta = load_checkpoint(tmp_path / "s.pt")
    assert model.frame_stride == 5 and meta["model"]["frame_stride"] == 5
    assert predict(model, data[1])["rr_bpm"].std() > 1e-3  # not a constant


def test_checkpoint_model_description_decides_the_stride(tmp_path):
    """A config saved beside a hand-built model (as the Core ML tests do) must not change the model."""
    from training.models import RRModel

    save_checkpoint(tmp_path / "m.pt", RRModel("tclstm", 16), TrainConfig(units=16, frame_stride=5))
    model, _ = load_checkpoint(tmp_path / "m.pt")
    assert model.frame_stride == 1


def test_band_limit_augmentation_touches_only_synthetic_segments():
    from training.dataset import collate
    from training.train import augment_batch

    examples = _examples(4, "train", 5)
    examples[0].segment.source = examples[2].segment.source = "synth"
    examples[1].segment.source = examples[3].segment.source = "rrujo/thinklabs"
    batch = collate(examples, [0, 1, 2, 3])
    before = batch.features.clone()
    augment_batch(batch, examples, TrainConfig(band_limit_prob=1.0), np.random.default_rng(0))
    changed = [not torch.equal(before[i], batch.features[i]) for i in range(4)]
    assert changed == [True, False, True, False]
    # padding after the valid frames stays zero
    n = len(examples[0].features)
    assert torch.equal(batch.features[0, n:], before[0, n:])
    untouched = collate(examples, [0, 1])
    augment_batch(untouched, examples, TrainConfig(band_limit_prob=0.0), np.random.default_rng(0))
    assert torch.equal(untouched.features, collate(examples, [0, 1]).features)


def test_phase_head_trains_on_long_windows_and_the_estimator_is_calibrated(tmp_path, data):
    """The phase path end to end on a few generated windows: it trains, is selected by the phase
    output's rate error, and the checkpoint carries estimator settings chosen on validation."""
    cfg = TrainConfig(
        max_epochs=2,
        batch_size=64,
        seed=5,
        units=16,
        phase_synth_windows=8,
        phase_noise_windows=2,
        phase_window_s=12.0,
        phase_batch_size=4,
    )
    summary = train(cfg, [], tmp_path / "p.pt", progress=False, train_examples=data[0], val_examples=data[1])
    assert summary["phase_windows"]["train"] >= 8 and summary["val_phase_mae_bpm"] is not None
    assert all("phase_ce" in h and "periodicity" in h for h in summary["history"])
    model, meta = load_checkpoint(tmp_path / "p.pt")
    from training.estimator import EstimatorConfig

    chosen = EstimatorConfig.from_dict(meta["estimator"])
    assert chosen == EstimatorConfig.from_dict(summary["estimator_calibration"]["chosen"])
    assert model.norm == "running" and meta["model"]["norm"] == "running"
    again = train(cfg, [], tmp_path / "q.pt", progress=False, train_examples=data[0], val_examples=data[1])
    assert again["val_phase_mae_bpm"] == summary["val_phase_mae_bpm"]  # seeded: the same run twice


def test_a_checkpoint_without_the_phase_head_is_refused_with_a_reason(tmp_path):
    from training.models import RRModel

    model = RRModel("tclstm", 16)
    save_checkpoint(tmp_path / "old.pt", model, TrainConfig(units=16))
    payload = torch.load(tmp_path / "old.pt", weights_only=True)
    payload["weights"] = {k: v for k, v in payload["weights"].items() if not k.startswith("phase_head")}
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"older Respira.*retrain"):
        load_checkpoint(tmp_path / "old.pt")


def test_rewrite_estimator_keeps_the_weights(tmp_path):
    from training.checkpoint import rewrite_estimator
    from training.models import RRModel

    torch.manual_seed(0)
    path = save_checkpoint(
        tmp_path / "m.pt", RRModel("tclstm", 16), TrainConfig(units=16), estimator={"window_s": 30}
    )
    before, _ = load_checkpoint(path)
    rewrite_estimator(path, {"window_s": 45.0, "learned_weight": 0.25}, {"recordings": 3})
    after, meta = load_checkpoint(path)
    assert meta["estimator"] == {"window_s": 45.0, "learned_weight": 0.25}
    assert meta["summary"]["estimator_calibration"] == {"recordings": 3}
    assert all(
        torch.equal(a, b)
        for a, b in zip(before.state_dict().values(), after.state_dict().values(), strict=True)
    )
