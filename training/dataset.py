"""Features and labels of a corpus, in memory, batched for training and evaluation.

Each recording is loaded and turned into log-mel frames once; a segment ``[start_s, end_s)`` takes the
frames whose 25 ms window lies wholly inside it. When ``start_s`` falls on the 10 ms hop grid this is
exactly the front-end applied to the segment's audio alone, otherwise the frames are shifted by less
than one hop.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training.audio import load_audio
from training.frontend import DEFAULT_FRONTEND, FrontEndConfig, mel_frequencies
from training.logmel import log_mel
from training.manifest import BREATH_CLASSES, Segment, audio_path, read_manifest


@dataclasses.dataclass
class Example:
    segment: Segment
    corpus_dir: Path
    features: np.ndarray  # [frames, n_mels] float32


def segment_frames(features: np.ndarray, start_s: float, end_s: float, cfg: FrontEndConfig) -> np.ndarray:
    """Frames of a whole-recording feature matrix whose windows lie inside ``[start_s, end_s)``."""
    first_sample = round(start_s * cfg.sample_rate)
    last_sample = round(end_s * cfg.sample_rate)
    first = math.ceil(first_sample / cfg.hop_length)
    last = (last_sample - cfg.win_length) // cfg.hop_length  # inclusive
    return features[first : min(last + 1, len(features))]


def load_examples(
    corpus_dirs: Sequence[Path | str],
    splits: Sequence[str] | None = None,
    cfg: FrontEndConfig = DEFAULT_FRONTEND,
    progress: bool = True,
) -> list[Example]:
    """Read the manifests of ``corpus_dirs`` and compute the features of their segments in ``splits``."""
    by_file: dict[Path, list[tuple[Path, Segment]]] = defaultdict(list)
    for corpus in corpus_dirs:
        corpus = Path(corpus)
        for seg in read_manifest(corpus):
            if splits is None or seg.split in splits:
                by_file[audio_path(corpus, seg)].append((corpus, seg))
    examples: list[Example] = []
    for path, items in tqdm(by_file.items(), desc="features", unit="file", disable=not progress):
        features = log_mel(load_audio(path, cfg.sample_rate), cfg)
        for corpus, seg in items:
            frames = segment_frames(features, seg.start_s, seg.end_s, cfg)
            if len(frames) >= 100:  # at least 1 s of frames
                examples.append(Example(seg, corpus, np.ascontiguousarray(frames)))
    return examples


@dataclasses.dataclass
class Batch:
    features: torch.Tensor  # [B, T, F] zero-padded at the end
    lengths: torch.Tensor  # [B]
    rr_bpm: torch.Tensor  # [B]
    respiration_count: torch.Tensor  # [B]
    breath: torch.Tensor  # [B] class index
    noisy: torch.Tensor  # [B] 0/1
    index: list[int]  # positions in the example list


def collate(examples: Sequence[Example], index: list[int]) -> Batch:
    chosen = [examples[i] for i in index]
    longest = max(len(e.features) for e in chosen)
    n_mels = chosen[0].features.shape[1]
    feats = np.zeros((len(chosen), longest, n_mels), dtype=np.float32)
    for row, e in enumerate(chosen):
        feats[row, : len(e.features)] = e.features
    return Batch(
        features=torch.from_numpy(feats),
        lengths=torch.tensor([len(e.features) for e in chosen]),
        rr_bpm=torch.tensor([e.segment.rr_bpm for e in chosen], dtype=torch.float32),
        respiration_count=torch.tensor([e.segment.respiration_count for e in chosen], dtype=torch.float32),
        breath=torch.tensor([BREATH_CLASSES.index(e.segment.breath_class) for e in chosen]),
        noisy=torch.tensor([e.segment.noisy for e in chosen]),
        index=index,
    )


def batches(
    examples: Sequence[Example], batch_size: int, rng: np.random.Generator | None = None
) -> Iterator[Batch]:
    """Shuffled batches when ``rng`` is given (training), else in order (evaluation).

    Shuffled batches are drawn from length-sorted pools of a few batches, which keeps padding small
    without making batch composition deterministic across epochs.
    """
    order = np.arange(len(examples))
    if rng is not None:
        order = rng.permutation(len(examples))
        pool = batch_size * 8
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            order[start : start + pool] = chunk[np.argsort([len(examples[i].features) for i in chunk])]
        starts: Sequence[int] = rng.permutation(range(0, len(order), batch_size)).tolist()
    else:
        starts = range(0, len(order), batch_size)
    for start in starts:
        yield collate(examples, [int(i) for i in order[start : start + batch_size]])


def feature_stats(examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    frames = np.concatenate([e.features for e in examples])
    return torch.from_numpy(frames.mean(axis=0)), torch.from_numpy(frames.std(axis=0))


def mel_band_centers_hz(cfg: FrontEndConfig = DEFAULT_FRONTEND) -> np.ndarray:
    """Centre frequency of each mel band of the front-end (the filterbank's own mel scale)."""
    return mel_frequencies(cfg.n_mels + 2, cfg.fmin_hz, cfg.fmax_hz, cfg.htk)[1:-1]


def band_limit(
    features: np.ndarray,
    cutoff_hz: float,
    cfg: FrontEndConfig = DEFAULT_FRONTEND,
    octave_db: float = 24.0,
) -> np.ndarray:
    """Log-mel frames as if the audio had been low-passed at ``cutoff_hz`` (ours, augmentation).

    A band's energy is scaled by the filter's power gain at its centre: 1 below the cutoff and
    ``-octave_db`` dB per octave above it (a 4th-order roll-off). In the log domain that is
    ``log(gain * (exp(x) - floor) + floor)``, so silence stays at the front-end's floor.
    """
    centers = mel_band_centers_hz(cfg)
    octaves_above = np.log2(np.maximum(centers / cutoff_hz, 1.0))
    gain = 10.0 ** (-octave_db * octaves_above / 10.0)
    energy = np.maximum(np.exp(features) - cfg.log_floor, 0.0)
    return np.log(energy * gain + cfg.log_floor).astype(np.float32)
