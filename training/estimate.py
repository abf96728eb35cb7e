"""Respiratory rate of whole audio files: ``python -m training.estimate FILE... [--checkpoint CKPT] --json``.

Each file is decoded (any sample rate, any common format), turned into log-mel frames once, and read in
windows of 6 s every 3 s (a file shorter than 6 s but at least 4 s is one window). The model gives each
window a rate, a count, breath-class probabilities and a noise probability.

The recording's rate is the median of the window rates weighted by confidence: a window's weight is
``P(breathing heard) x P(clean)``, i.e. ``(1 - p_none) * (1 - noise_prob)`` (plus 1e-3 so a recording
where every window is doubtful still gets an answer). A weighted median ignores a minority of wild
windows (a cough, a car passing) where a mean would be dragged. The recording's count is that rate times
its duration; its class is the arg-max of the mean window probabilities; its noise is the mean noise.

With ``--json`` it prints one JSON object per file and line. A file that fails prints
``{"path", "error"}`` on stdout and a message on stderr; the others still run, and the exit code is 1
at the end if any failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from training.audio import AudioError, load_audio
from training.checkpoint import CheckpointError, load_checkpoint
from training.frontend import DEFAULT_FRONTEND, FrontEndConfig, log_mel
from training.manifest import BREATH_CLASSES
from training.models import RRModel

WINDOW_S = 6.0
HOP_S = 3.0
MIN_DURATION_S = 4.0


def window_starts(duration_s: float, window_s: float = WINDOW_S, hop_s: float = HOP_S) -> list[float]:
    """Window start times covering the recording; the last window is aligned to the end."""
    if duration_s <= window_s:
        return [0.0]
    starts = list(np.arange(0.0, duration_s - window_s + 1e-9, hop_s))
    if duration_s - (starts[-1] + window_s) > 0.5:
        starts.append(duration_s - window_s)
    return [round(float(s), 3) for s in starts]


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


@torch.no_grad()
def estimate_audio(audio: np.ndarray, model: RRModel, cfg: FrontEndConfig = DEFAULT_FRONTEND) -> dict:
    """Estimate from 16 kHz mono audio; returns the per-file object (without ``path``)."""
    duration_s = len(audio) / cfg.sample_rate
    if duration_s < MIN_DURATION_S:
        raise AudioError(f"audio is {duration_s:.2f} s long; at least {MIN_DURATION_S:g} s is needed")
    features = log_mel(audio, cfg)
    frames_per_s = cfg.frames_per_second
    starts = window_starts(duration_s)
    window_frames = min(int(WINDOW_S * frames_per_s) - 3, len(features))
    batch = np.stack(
        [
            features[min(round(s * frames_per_s), len(features) - window_frames) :][:window_frames]
            for s in starts
        ]
    )
    out = model(torch.from_numpy(batch))
    rr = model.rr_to_bpm(out.rr_z).numpy().astype(np.float64)
    rc = out.rc.numpy().astype(np.float64)
    breath_probs = torch.softmax(out.breath_logits, -1).numpy().astype(np.float64)
    noise = torch.softmax(out.noise_logits, -1)[:, 1].numpy().astype(np.float64)
    weights = (1.0 - breath_probs[:, 0]) * (1.0 - noise) + 1e-3
    rr_bpm = weighted_median(rr, weights)
    segments = [
        {
            "start_s": s,
            "end_s": round(min(s + WINDOW_S, duration_s), 3),
            "rr_bpm": round(float(rr[i]), 2),
            "respiration_count": round(float(rc[i]), 2),
            "breath_class": BREATH_CLASSES[int(np.argmax(breath_probs[i]))],
            "breath_probs": [round(float(p), 4) for p in breath_probs[i]],
            "noise_prob": round(float(noise[i]), 4),
        }
        for i, s in enumerate(starts)
    ]
    return {
        "duration_s": round(duration_s, 3),
        "rr_bpm": round(rr_bpm, 2),
        "respiration_count": round(rr_bpm * duration_s / 60.0, 2),
        "breath_class": BREATH_CLASSES[int(np.argmax(breath_probs.mean(axis=0)))],
        "noise_prob": round(float(noise.mean()), 4),
        "segments": segments,
    }


def estimate_file(path: str | Path, model: RRModel, cfg: FrontEndConfig = DEFAULT_FRONTEND) -> dict:
    audio = load_audio(path, cfg.sample_rate, min_duration_s=MIN_DURATION_S)
    return {"path": str(path), **estimate_audio(audio, model, cfg)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.estimate", description=__doc__.split("\n")[0])
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3, m4a, ...)"
    )
    parser.add_argument("--checkpoint", help="model checkpoint (default: the model shipped in the package)")
    parser.add_argument("--json", action="store_true", help="one JSON object per file and line")
    args = parser.parse_args(argv)
    try:
        model, _ = load_checkpoint(args.checkpoint)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for path in args.files:
        try:
            result = estimate_file(path, model)
        except AudioError as exc:
            failed += 1
            message = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            print(f"error: {message}", file=sys.stderr)
            if args.json:
                print(json.dumps({"path": str(path), "error": message}), flush=True)
            continue
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(
                f"{path}: {result['rr_bpm']:.1f} breaths/min over {result['duration_s']:.1f} s "
                f"({result['breath_class']}, noise {result['noise_prob']:.2f})",
                flush=True,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
