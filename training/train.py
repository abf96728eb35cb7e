"""Training, as a plain loop you can read top to bottom.

    examples -> feature & label normalisation -> for each epoch: shuffled batches, multi-task loss with
    dynamic weight averaging, Adam step -> validation CCC of RR -> keep the best epoch -> early stop

Everything random is seeded from ``cfg.seed``, and torch runs deterministic CPU kernels, so the same
data and config give the same checkpoint.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm import tqdm

from training.checkpoint import save_checkpoint
from training.config import TrainConfig
from training.dataset import Batch, Example, band_limit, batches, feature_stats, load_examples
from training.estimator import EstimatorConfig, learned_rate
from training.frontend import DEFAULT_FRONTEND
from training.losses import (
    TASKS,
    DynamicWeightAverage,
    MultiTaskLoss,
    activity_loss,
    ccc,
    class_weights,
    periodicity_loss,
    phase_cross_entropy,
)
from training.manifest import BREATH_CLASSES
from training.models import RRModel
from training.phase_data import (
    PhaseBatch,
    PhaseExample,
    collate_phase,
    noise_windows,
    paced_windows,
    synth_windows,
)
from training.real_noise import load_noise_bank


class TrainingDataError(ValueError):
    """The corpus cannot be trained on (e.g. no training or validation segments)."""


@torch.no_grad()
def predict(model: RRModel, examples: Sequence[Example], batch_size: int = 128) -> dict[str, np.ndarray]:
    """Per-example predictions in the examples' order: rr_bpm, respiration_count, breath_probs, noise_prob."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {
        "rr_bpm": [],
        "respiration_count": [],
        "breath_probs": [],
        "noise_prob": [],
    }
    for batch in batches(examples, batch_size):
        out = model(batch.features, batch.lengths)
        parts["rr_bpm"].append(model.rr_to_bpm(out.rr_z).numpy())
        parts["respiration_count"].append(out.rc.numpy())
        parts["breath_probs"].append(torch.softmax(out.breath_logits, -1).numpy())
        parts["noise_prob"].append(torch.softmax(out.noise_logits, -1)[:, 1].numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def validation_ccc(model: RRModel, examples: Sequence[Example]) -> float:
    pred = predict(model, examples)["rr_bpm"]
    true = np.array([e.segment.rr_bpm for e in examples], dtype=np.float32)
    return float(ccc(torch.from_numpy(pred), torch.from_numpy(true)))


@torch.no_grad()
def phase_rate_errors(model: RRModel, examples: Sequence[PhaseExample], batch_size: int = 32) -> np.ndarray:
    """Absolute rate error of the phase output alone on windows with a known steady rate."""
    model.eval()
    known = [e for e in examples if e.period_steps > 0]
    errors = []
    for start in range(0, len(known), batch_size):
        chunk = known[start : start + batch_size]
        batch = collate_phase(chunk, model.frame_stride)
        probs = torch.softmax(model(batch.features, batch.lengths).phase_logits, -1).numpy()
        for row, e in enumerate(chunk):
            steps = len(e.features) // model.frame_stride
            rr, _ = learned_rate(probs[row, :steps, 0] - probs[row, :steps, 1], model.steps_per_second)
            errors.append(abs(rr - e.rr_bpm) if np.isfinite(rr) else e.rr_bpm)
    return np.array(errors)


def phase_examples(cfg: TrainConfig, corpus_dirs: Sequence[Path | str], progress: bool) -> tuple[list, list]:
    """Training and validation windows for the phase head (see training.phase_data)."""
    started = time.monotonic()
    noise_dir = cfg.noise_dir or None
    train_bank, val_bank = load_noise_bank("train", noise_dir), load_noise_bank("val", noise_dir)
    w, stride = cfg.phase_window_s, cfg.frame_stride
    train = synth_windows(cfg.phase_synth_windows, cfg.seed, w, stride, train_bank)
    train += paced_windows(corpus_dirs, ["train"], w, cfg.paced_hop_s, stride, cfg.seed, train_bank)
    train += noise_windows(train_bank, cfg.phase_noise_windows, w, stride, cfg.seed)
    val = synth_windows(max(cfg.phase_synth_windows // 5, 10), cfg.seed + 10_000, w, stride, val_bank)
    val += paced_windows(corpus_dirs, ["val"], w, 2 * cfg.paced_hop_s, stride, cfg.seed, augment=False)
    if progress:
        print(
            f"phase windows: {len(train)} train, {len(val)} val ({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    return train, val


def calibrate_estimator(
    model: RRModel, cfg: TrainConfig, corpus_dirs: Sequence[Path | str]
) -> tuple[EstimatorConfig, dict]:
    """The estimator's settings for this model, chosen on the validation recordings (see
    :func:`training.recording_eval.calibrate`): its whole-recording answers, not its segments."""
    from training.estimator import phase_tracks
    from training.recording_eval import calibrate, evaluation_set, recording_evidence

    recordings = evaluation_set(corpus_dirs, "val", load_noise_bank("val", cfg.noise_dir or None), cfg.seed)
    if not recordings:  # nothing to calibrate on: the documented defaults
        return EstimatorConfig(), {"recordings": 0, "chosen": EstimatorConfig().to_dict()}
    tracks = phase_tracks(model, [rec.audio for rec in recordings])  # in batches: the costly part
    evidence = [
        recording_evidence(rec, model, with_segments=False, track=track).whole
        for rec, track in zip(recordings, tracks, strict=True)
    ]
    chosen, loss = calibrate(recordings, evidence)
    dsp_only = dataclasses.replace(chosen, learned_weight=0.0)
    from training.recording_eval import calibration_loss

    return chosen, {
        "recordings": len(recordings),
        "loss": round(loss, 4),
        "loss_with_dsp_autocorrelation_only": round(calibration_loss(recordings, evidence, dsp_only), 4),
        "chosen": chosen.to_dict(),
    }


def recalibrate(checkpoint: Path | str, corpus_dirs: Sequence[Path | str]) -> dict:
    """Choose the estimator settings of a trained checkpoint again, on ``corpus_dirs``' validation
    recordings (after a change to the estimator's rules; the weights stay as they are), and rewrite
    the checkpoint with them. Returns the calibration summary."""
    from training.checkpoint import load_checkpoint, rewrite_estimator

    model, meta = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_dict(meta["config"])
    chosen, calibration = calibrate_estimator(model, cfg, corpus_dirs)
    rewrite_estimator(checkpoint, chosen.to_dict(), calibration)
    return calibration


def make_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The learning-rate schedule of ``cfg.lr_schedule`` (ours), stepped once per epoch; None = constant.

    "plateau" watches the validation CCC of RR (mode "max"): the paper's rate of 0.01 finds a good
    region within two epochs and then overshoots it, so the rate halves whenever validation stalls.
    """
    if cfg.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=cfg.lr_decay_factor,
            patience=cfg.lr_decay_patience,
            min_lr=cfg.lr_min,
        )
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.max_epochs, eta_min=cfg.lr_min)
    return None


def augment_batch(
    batch: Batch, examples: Sequence[Example], cfg: TrainConfig, rng: np.random.Generator
) -> None:
    """Band-limit some synthetic segments of a training batch in place (ours; see TrainConfig)."""
    if not cfg.band_limit_prob:
        return
    for row, i in enumerate(batch.index):
        e = examples[i]
        if e.segment.source == "synth" and rng.random() < cfg.band_limit_prob:
            n = len(e.features)
            cutoff_hz = rng.uniform(*cfg.band_limit_hz)
            batch.features[row, :n] = torch.from_numpy(band_limit(e.features, cutoff_hz))


def _train_val_examples(
    corpus_dirs: Sequence[Path | str],
    progress: bool,
    train_examples: Sequence[Example] | None,
    val_examples: Sequence[Example] | None,
) -> tuple[Sequence[Example], Sequence[Example]]:
    """The examples given, or the corpora's ``train`` and ``val`` splits; refuses an empty split."""
    if train_examples is None:
        train_examples = load_examples(corpus_dirs, ["train"], progress=progress)
    if val_examples is None:
        val_examples = load_examples(corpus_dirs, ["val"], progress=progress)
    if not train_examples:
        raise TrainingDataError(f"no 'train' segments in {', '.join(map(str, corpus_dirs))}")
    if not val_examples:
        raise TrainingDataError(f"no 'val' segments in {', '.join(map(str, corpus_dirs))}")
    return train_examples, val_examples


def _phase_loss(model: RRModel, batch: PhaseBatch, cfg: TrainConfig, sums: dict[str, float]) -> torch.Tensor:
    """The phase head's losses on a batch of long windows, weighted by ``cfg.phase_weight``; each one's
    value is added to ``sums`` (the epoch's running totals)."""
    logits = model(batch.features, batch.lengths).phase_logits
    steps = torch.div(batch.lengths, cfg.frame_stride, rounding_mode="floor")
    losses = {
        "phase_ce": phase_cross_entropy(logits, batch.phase),
        "periodicity": periodicity_loss(logits, batch.period_steps, steps),
        "activity": activity_loss(logits, batch.breathing, steps),
    }
    for name, value in losses.items():
        sums[name] = sums.get(name, 0.0) + float(value.detach())
    return cfg.phase_weight * cast(torch.Tensor, sum(losses.values()))


def train(
    cfg: TrainConfig,
    corpus_dirs: Sequence[Path | str],
    out_path: Path | str,
    progress: bool = True,
    train_examples: Sequence[Example] | None = None,
    val_examples: Sequence[Example] | None = None,
) -> dict:
    """Train on the ``train`` split of ``corpus_dirs``, select on ``val``, save the best to ``out_path``."""
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(cfg.seed)
    train_examples, val_examples = _train_val_examples(corpus_dirs, progress, train_examples, val_examples)

    # -- normalisation and class weights from the training split only
    model = RRModel.from_config(cfg, DEFAULT_FRONTEND)
    model.set_feature_stats(*feature_stats(train_examples))
    rr = np.array([e.segment.rr_bpm for e in train_examples])
    model.set_label_stats(float(rr.mean()), float(rr.std()))
    breath_counts = [sum(e.segment.breath_class == c for e in train_examples) for c in BREATH_CLASSES]
    noise_counts = [sum(e.segment.noisy == k for e in train_examples) for k in (0, 1)]
    loss_fn = MultiTaskLoss(cfg, class_weights(breath_counts), class_weights(noise_counts))
    dwa = DynamicWeightAverage(TASKS, cfg.dwa_temperature)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    scheduler = make_scheduler(cfg, optimizer)
    sources = sorted({e.segment.source for e in train_examples})  # groups of the within-source CCC
    augment_rng = np.random.default_rng(cfg.seed + 1)  # its own stream: batches stay as without it

    phase_train, phase_val = phase_examples(cfg, corpus_dirs, progress) if cfg.phase_weight else ([], [])
    phase_order = np.random.default_rng(cfg.seed + 2)  # its own stream, as for augmentation

    def next_phase_batch() -> PhaseBatch:
        index = phase_order.choice(len(phase_train), size=min(cfg.phase_batch_size, len(phase_train)))
        return collate_phase([phase_train[i] for i in index], cfg.frame_stride)

    best: dict[str, Any] = {"val_score": -np.inf, "val_ccc_rr": -np.inf, "epoch": -1, "state": None}
    history = []
    started = time.monotonic()
    for epoch in range(cfg.max_epochs):
        model.train()
        weights = dwa.weights()
        sums = dict.fromkeys(TASKS, 0.0)
        n_batches = 0
        bar = tqdm(
            batches(train_examples, cfg.batch_size, rng),
            disable=not progress,
            leave=False,
            total=-(-len(train_examples) // cfg.batch_size),
            desc=f"epoch {epoch + 1}",
        )
        for batch in bar:
            augment_batch(batch, train_examples, cfg, augment_rng)
            out = model(batch.features, batch.lengths)
            rr_z = (batch.rr_bpm - model.rr_mean) / model.rr_std
            groups = torch.tensor([sources.index(train_examples[i].segment.source) for i in batch.index])
            losses = loss_fn.task_losses(
                out, rr_z, batch.respiration_count, batch.breath, batch.noisy, groups
            )
            loss = loss_fn.total(losses, weights)
            if phase_train:
                loss = loss + _phase_loss(model, next_phase_batch(), cfg, sums)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            for t in TASKS:
                sums[t] += float(losses[t].detach())
            n_batches += 1
            bar.set_postfix(loss=f"{loss.item():.3f}")
        mean_losses = {t: sums[t] / max(n_batches, 1) for t in sums}
        dwa.end_epoch({t: mean_losses[t] for t in TASKS})
        val_ccc = validation_ccc(model, val_examples)
        # the score that picks the best epoch: the phase output's rate error when there is one
        val_phase_mae = float(phase_rate_errors(model, phase_val).mean()) if phase_val else None
        val_score = -val_phase_mae if val_phase_mae is not None else val_ccc
        lr = optimizer.param_groups[0]["lr"]
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_score)
        elif scheduler is not None:
            scheduler.step()
        history.append(
            {
                "epoch": epoch + 1,
                "val_ccc_rr": val_ccc,
                "val_phase_mae_bpm": val_phase_mae,
                "lr": lr,
                **mean_losses,
                "dwa": weights,
                "elapsed_s": round(time.monotonic() - started, 1),
            }
        )
        if progress:
            print(
                f"epoch {epoch + 1:3d}  lr {lr:.2g}  loss {sum(mean_losses.values()):.3f}  "
                f"val CCC(RR) {val_ccc:.3f}"
                + (f"  val phase MAE {val_phase_mae:.2f}" if val_phase_mae is not None else "")
                + ("  *" if val_score > best["val_score"] else ""),
                flush=True,
            )
        if val_score > best["val_score"]:
            best = {
                "val_score": val_score,
                "val_phase_mae_bpm": val_phase_mae,
                "val_ccc_rr": val_ccc,
                "epoch": epoch + 1,
                "state": {k: v.clone() for k, v in model.state_dict().items()},
            }
        elif epoch + 1 - best["epoch"] >= cfg.patience:
            break
        if cfg.max_train_minutes and time.monotonic() - started > 60 * cfg.max_train_minutes:
            break

    model.load_state_dict(best["state"])
    estimator_cfg, calibration = calibrate_estimator(model, cfg, corpus_dirs) if phase_train else (None, None)
    summary = {
        "best_epoch": best["epoch"],
        "val_ccc_rr": best["val_ccc_rr"],
        "val_phase_mae_bpm": best.get("val_phase_mae_bpm"),
        "phase_windows": {"train": len(phase_train), "val": len(phase_val)},
        "estimator_calibration": calibration,
        "epochs_run": len(history),
        "train_seconds": round(time.monotonic() - started, 1),
        "history": history,
        "data": {
            "corpora": [str(c) for c in corpus_dirs],
            "train_segments": len(train_examples),
            "val_segments": len(val_examples),
            "train_participants": len({e.segment.participant for e in train_examples}),
            "breath_counts": dict(zip(BREATH_CLASSES, breath_counts, strict=True)),
            "noisy_counts": dict(zip(("clean", "noisy"), noise_counts, strict=True)),
            "sources": sorted({e.segment.source for e in train_examples}),
        },
    }
    save_checkpoint(
        out_path,
        model,
        cfg,
        DEFAULT_FRONTEND,
        summary,
        estimator=estimator_cfg.to_dict() if estimator_cfg else None,
    )
    return summary
