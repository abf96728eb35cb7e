"""Evaluation: a checkpoint (and the DSP baseline) on a corpus's validation and test splits -> report.

Segment level, each model predicts every manifest segment of the split from its own frames. Recording
level, each recording (segments sharing a ``recording`` id) is estimated once over its whole span with
:func:`training.estimator.estimate_audio`, i.e. exactly what ``python -m training.estimate`` answers
for a file (a "no breathing" or "too noisy" answer counts as missing). The DSP baseline gets the
same treatment (:func:`training.dsp_baseline.dsp_run`), so the two are compared on the same audio.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.audio import AudioError, load_audio
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.dataset import load_examples
from training.estimator import (
    MIN_DURATION_S,
    PHASE_TRACK_BATCH,
    EstimatorConfig,
    estimate_audio,
    phase_tracks,
)
from training.frontend import SAMPLE_RATE_HZ
from training.manifest import Segment, audio_path, read_manifest
from training.models import RRModel
from training.report import PredictionRow, RunPredictions, write_report
from training.train import predict

SPLITS = ("val", "test")


def run_name(meta: dict) -> str:
    cfg = meta["config"]
    name = f"{'TC-LSTM' if cfg['model_type'] == 'tclstm' else 'LSTM'}-{cfg['units']}"
    paper = TrainConfig.paper().to_dict()
    ours = [
        k
        for k in ("frame_stride", "lr_schedule", "rr_mse_weight", "rr_group_ccc_weight", "band_limit_prob")
        if k in cfg and cfg[k] != paper[k]
    ]
    return name + (" +aug" if was_augmented(meta) else "") + (" (ours)" if ours else "")


def was_augmented(meta: dict) -> bool:
    return any("+aug" in s for s in meta.get("summary", {}).get("data", {}).get("sources", []))


def recording_estimates(
    model: RRModel,
    corpus_dirs: Sequence[Path | str],
    split: str,
    progress: bool = False,
    estimator: dict | None = None,
) -> dict[str, float]:
    """Whole-recording rate per recording id of ``split``, over the span its segments cover, by the
    estimator (:mod:`training.estimator`) with the checkpoint's calibrated settings (``estimator``)."""
    estimator = estimator or {}
    spans: dict[str, tuple[Path, float, float]] = {}
    for corpus in corpus_dirs:
        for seg in read_manifest(corpus):
            if seg.split != split or not seg.recording:
                continue
            path = audio_path(corpus, seg)
            _, start_s, end_s = spans.get(seg.recording, (path, seg.start_s, seg.end_s))
            spans[seg.recording] = (path, min(start_s, seg.start_s), max(end_s, seg.end_s))
    loaded: list[tuple[str, np.ndarray]] = []
    estimates: dict[str, float] = {}
    for recording, (path, start_s, end_s) in tqdm(
        spans.items(), desc=f"recordings [{split}]", disable=not progress, leave=False
    ):
        if end_s - start_s < MIN_DURATION_S:
            continue
        try:
            loaded.append((recording, load_audio(path, SAMPLE_RATE_HZ, start_s=start_s, end_s=end_s)))
        except AudioError:
            continue
        if len(loaded) == PHASE_TRACK_BATCH:
            estimates.update(_batch_estimates(model, loaded, estimator))
            loaded = []
    estimates.update(_batch_estimates(model, loaded, estimator))
    return estimates


def _batch_estimates(
    model: RRModel, recordings: Sequence[tuple[str, np.ndarray]], estimator: dict
) -> dict[str, float]:
    """Whole-recording rates of recordings (id, audio), their phase tracks computed in one batch."""
    tracks = phase_tracks(model, [audio for _, audio in recordings])
    estimates = {}
    for (recording, audio), track in zip(recordings, tracks, strict=True):
        try:
            answer = estimate_audio(audio, model, EstimatorConfig.from_dict(estimator), track=track)["rr_bpm"]
        except ValueError:  # e.g. a constant signal: nothing to estimate
            answer = None
        # "no breathing" / "too noisy" is no number: counted as missing, like the DSP's flat audio
        estimates[recording] = math.nan if answer is None else answer
    return estimates


def model_runs(
    checkpoint: Path | str,
    corpus_dirs: Sequence[Path | str],
    splits: Sequence[str] = SPLITS,
    progress: bool = True,
) -> tuple[list[RunPredictions], dict]:
    model, meta = load_checkpoint(checkpoint)
    runs = []
    for split in splits:
        examples = load_examples(corpus_dirs, [split], progress=progress)
        if not examples:
            continue
        pred = predict(model, examples)
        rows = [
            PredictionRow.from_segment(
                e.segment,
                pred["rr_bpm"][i],
                pred["respiration_count"][i],
                pred["breath_probs"][i],
                pred["noise_prob"][i],
            )
            for i, e in enumerate(examples)
        ]
        runs.append(
            RunPredictions(
                name=run_name(meta),
                model_type=meta["config"]["model_type"],
                units=meta["config"]["units"],
                augmented=was_augmented(meta),
                split=split,
                rows=rows,
                recording_rr_pred_bpm=recording_estimates(
                    model, corpus_dirs, split, progress, meta.get("estimator")
                ),
            )
        )
    return runs, meta


def dsp_runs(corpus_dirs: Sequence[Path | str], splits: Sequence[str] = SPLITS) -> list[RunPredictions]:
    from training.dsp_baseline import dsp_run

    merged: dict[str, RunPredictions] = {}
    for corpus in corpus_dirs:
        segments: list[Segment] = read_manifest(corpus)
        for split in splits:
            if not any(s.split == split for s in segments):
                continue
            run = dsp_run(segments, corpus, split=split)
            if split in merged:
                merged[split].rows.extend(run.rows)
                merged[split].recording_rr_pred_bpm = {
                    **(merged[split].recording_rr_pred_bpm or {}),
                    **(run.recording_rr_pred_bpm or {}),
                }
            else:
                merged[split] = run
    return list(merged.values())


def evaluate(
    checkpoints: Sequence[Path | str],
    corpus_dirs: Sequence[Path | str],
    out_dir: Path | str,
    with_dsp: bool = True,
    progress: bool = True,
    extra_notes: Sequence[str] = (),
) -> dict:
    """Write the report for one or more checkpoints (plus the DSP baseline) on the corpora."""
    runs: list[RunPredictions] = []
    notes = [f"data: {', '.join(str(c) for c in corpus_dirs)}", *extra_notes]
    rr_norm = None
    seen: dict[str, int] = defaultdict(int)
    for checkpoint in checkpoints:
        model_level, meta = model_runs(checkpoint, corpus_dirs, progress=progress)
        for run in model_level:
            seen[run.name + run.split] += 1
            if seen[run.name + run.split] > 1:  # two checkpoints of the same kind: keep both
                run.name = f"{run.name} ({Path(checkpoint).stem})"
        runs.extend(model_level)
        if rr_norm is None:  # z-normalisation by the first checkpoint's training labels
            rr_norm = (meta["label_norm"]["rr_mean"], meta["label_norm"]["rr_std"])
        summary = meta.get("summary", {})
        notes.append(
            f"checkpoint {checkpoint}: {run_name(meta)}, best epoch {summary.get('best_epoch')}, "
            f"trained {summary.get('train_seconds')} s on {summary.get('data', {}).get('corpora')}, "
            f"sha256 {meta['sha256'][:12]}"
        )
    if with_dsp:
        runs.extend(dsp_runs(corpus_dirs))
    if rr_norm is None:
        raise ValueError("no checkpoint to evaluate")
    return write_report(runs, out_dir, rr_norm=rr_norm, notes=notes)
