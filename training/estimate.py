"""Respiratory rate of audio files: ``python -m training.estimate FILE|DIR... [--window-s S] --json``.

Each file is decoded (any sample rate, any common format) and estimated by :mod:`training.estimator`,
the one estimator every path uses: the recording's rate from the model's inhale/exhale output and the
DSP baseline's candidates over the whole recording, a rolling rate over ``--window-s`` seconds
(default 30, 15-60) every 5 s as ``timeline``, and the paper's segment heads on 6 s windows as
``segments``. A directory stands for the audio files in it (sorted; not recursive).

With ``--json`` it prints one JSON object per file and line::

    {"path", "duration_s", "rr_bpm" (null when there is no answer), "rr_confidence" (0-1),
     "reason" (null, "no_breathing" or "too_noisy"), "respiration_count" (counted breaths),
     "breath_class" (none / normal / heavy / unknown), "breath_activity", "noise_prob", "window_s",
     "timeline": [{"start_s", "end_s", "rr_bpm", "rr_confidence", "reason"}, ...],
     "segments": [{"start_s", "end_s", "rr_bpm", "respiration_count", "breath_class",
                   "breath_probs", "noise_prob"}, ...]}

A file that fails prints ``{"path", "error"}`` on stdout and a message on stderr; the others still run,
and the exit code is 1 at the end if any failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from training.audio import FFMPEG_SUFFIXES, SOUNDFILE_SUFFIXES, AudioError, load_audio
from training.checkpoint import CheckpointError, load_checkpoint
from training.estimator import (
    DEFAULT_ESTIMATOR,
    MIN_DURATION_S,
    WINDOW_RANGE_S,
    EstimatorConfig,
    estimate_audio,
    phase_tracks,
)
from training.frontend import DEFAULT_FRONTEND, FrontEndConfig
from training.models import RRModel

AUDIO_SUFFIXES = SOUNDFILE_SUFFIXES | FFMPEG_SUFFIXES


FILES_PER_BATCH = 8  # files estimated together: their phase tracks run side by side
BATCH_AUDIO_S = 1800.0  # but at most this much audio held at once (long recordings: memory, not speed)


def estimate_files(
    paths: Sequence[str | Path],
    model: RRModel,
    cfg: EstimatorConfig = DEFAULT_ESTIMATOR,
    frontend: FrontEndConfig = DEFAULT_FRONTEND,
    max_batch_s: float = BATCH_AUDIO_S,
) -> list[dict | Exception]:
    """Each file's ``estimate`` JSON, or the error that stopped it, in the order given.

    The files' phase tracks are computed together (:func:`training.estimator.phase_tracks`): run 100 ms
    at a time as the package runs, one recording alone is mostly per-op overhead, which a batch shares.
    Decoded files wait for their batch until ``max_batch_s`` of audio is held, then run."""
    results: list[dict | Exception] = [AudioError("not estimated")] * len(paths)
    pending: list[tuple[int, str, np.ndarray]] = []

    def run_pending() -> None:
        tracks = phase_tracks(model, [audio for _, _, audio in pending], frontend)
        for (index, path, audio), track in zip(pending, tracks, strict=True):
            try:
                results[index] = {"path": path, **estimate_audio(audio, model, cfg, frontend, track=track)}
            except ValueError as exc:  # e.g. a constant signal: nothing to estimate
                results[index] = exc
        pending.clear()

    for index, path in enumerate(paths):
        try:
            if Path(path).is_dir():
                raise AudioError(f"{path}: a folder with no audio files in it")
            audio = load_audio(path, frontend.sample_rate, min_duration_s=MIN_DURATION_S)
        except (AudioError, ValueError) as exc:
            results[index] = exc
            continue
        pending.append((index, str(path), audio))
        if sum(len(a) for _, _, a in pending) >= max_batch_s * frontend.sample_rate:
            run_pending()
    run_pending()
    return results


def expand_paths(paths: Sequence[str]) -> Iterator[str]:
    """Each path as given, except that a directory stands for the audio files directly inside it."""
    for path in paths:
        folder = Path(path)
        if folder.is_dir():
            found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                yield path  # reported below as an error naming the folder
            yield from map(str, found)
        else:
            yield path


def window_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    lo, hi = WINDOW_RANGE_S
    if not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"the window must be {lo:g}-{hi:g} s, not {value:g}")
    return value


def _line(result: dict) -> str:
    if result["rr_bpm"] is None:
        answer = {"no_breathing": "no breathing heard", "too_noisy": "too noisy to tell"}[result["reason"]]
    else:
        answer = f"{result['rr_bpm']:.1f} breaths/min (confidence {result['rr_confidence']:.2f})"
    return (
        f"{result['path']}: {answer} over {result['duration_s']:.1f} s, "
        f"{result['respiration_count']} breaths counted (noise {result['noise_prob']:.2f})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.estimate", description=__doc__.split("\n")[0])
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="audio files (wav, flac, ogg, mp3, m4a, ...) or folders of them",
    )
    parser.add_argument("--checkpoint", help="model checkpoint (default: the model shipped in the package)")
    parser.add_argument(
        "--window-s",
        type=window_seconds,
        default=None,
        help="rolling window of the timeline in seconds (15-60; default: the checkpoint's, 30)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per file and line")
    args = parser.parse_args(argv)
    try:
        model, meta = load_checkpoint(args.checkpoint)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = EstimatorConfig.from_dict(meta.get("estimator", {}))
    if args.window_s is not None:
        cfg = EstimatorConfig.from_dict({**cfg.to_dict(), "window_s": args.window_s})
    failed = 0
    paths = list(expand_paths(args.files))
    for first in range(0, len(paths), FILES_PER_BATCH):
        batch = paths[first : first + FILES_PER_BATCH]
        for path, result in zip(batch, estimate_files(batch, model, cfg), strict=True):
            if isinstance(result, Exception):
                failed += 1
                message = str(result) if str(path) in str(result) else f"{path}: {result}"
                print(f"error: {message}", file=sys.stderr)
                if args.json:
                    print(json.dumps({"path": str(path), "error": message}), flush=True)
                continue
            print(json.dumps(result) if args.json else _line(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
