"""Long windows with frame-level supervision, for the model's phase head.

Three kinds of window, each turned into log-mel features once:

- **synthetic** (:func:`synth_windows`): generated breathing with exact labels at every model step
  (inhale / exhale / other, from the generator's cycles), at rates from 5 to 45 breaths/min, some
  no-breath clips, mixed with synthetic or real background noise at -5..30 dB SNR, then passed through
  a simulated device (:mod:`training.device_augment`);
- **real breathing with a known rate** (:func:`paced_windows`): windows of imported real recordings
  whose rate was paced (RRuJO). Which stretch is an inhale is unknown, so these carry no frame labels;
  they carry the period, which the periodicity loss uses (:func:`training.losses.periodicity_loss`),
  and the fact that someone is breathing;
- **real noise** (:func:`noise_windows`): stretches of the training part of ``../shared/data/noise``
  through a simulated device, labelled "other" everywhere: no breathing at all.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from training.audio import load_audio
from training.augment import scale_noise
from training.device_augment import simulate_device
from training.frontend import DEFAULT_FRONTEND, SAMPLE_RATE_HZ, FrontEndConfig
from training.logmel import log_mel
from training.manifest import audio_path, read_manifest
from training.noise import kinds_for, make_noise
from training.real_noise import NoiseBank
from training.synth import STAGES, make_participant, synth_recording

UNKNOWN = -1  # a step without a frame label
OTHER = 2


@dataclasses.dataclass
class PhaseExample:
    features: np.ndarray  # [frames, n_mels] float32
    phase: np.ndarray  # [steps] int64: 0 inhale, 1 exhale, 2 other, -1 unknown
    period_steps: float  # the breathing period in model steps, 0 when unknown or none
    breathing: int  # 1 someone breathes throughout, 0 nobody does, -1 unknown
    source: str
    rr_bpm: float  # the window's rate (nan when unknown; 0 for no breathing)


def step_times_s(n_steps: int, frame_stride: int, cfg: FrontEndConfig = DEFAULT_FRONTEND) -> np.ndarray:
    """Centre time of each model step: the middle of its ``frame_stride`` frames' windows."""
    first = np.arange(n_steps) * frame_stride
    centre_frame = first + (frame_stride - 1) / 2.0
    return (centre_frame * cfg.hop_length + cfg.win_length / 2.0) / cfg.sample_rate


def _mix_background(
    audio: np.ndarray, clean: np.ndarray, rng: np.random.Generator, noise_bank: NoiseBank, environment: str
) -> np.ndarray:
    """Add synthetic or real background at -5..30 dB against the breath (a quarter stay clean)."""
    choice = rng.random()
    if choice < 0.25 or not np.any(clean):
        return audio
    snr_db = float(rng.uniform(-5.0, 30.0))
    if choice < 0.6 or not noise_bank:
        noise = make_noise(str(rng.choice(kinds_for(environment))), len(audio) / SAMPLE_RATE_HZ, rng)[
            : len(audio)
        ]
    else:
        _, noise = noise_bank.draw(len(audio), rng)
    try:
        return audio + scale_noise(clean, noise, snr_db)
    except ValueError:  # a silent breath track: nothing to measure the SNR against
        return audio


def synth_windows(
    n: int,
    seed: int,
    window_s: float,
    frame_stride: int,
    noise_bank: NoiseBank,
    no_breath_share: float = 0.12,
    cfg: FrontEndConfig = DEFAULT_FRONTEND,
) -> list[PhaseExample]:
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        person = make_participant(f"phase{seed}-{i}", int(rng.integers(0, 2**63 - 1)))
        environment = "indoor" if rng.random() < 0.65 else "outdoor"
        kind = rng.random()
        stage, rate_bpm, pause_prob = None, None, 0.0
        if kind < no_breath_share:
            rate_bpm = 0.0
        elif kind < 0.5:
            stage = int(rng.choice(STAGES))
        else:
            rate_bpm = float(math.exp(rng.uniform(math.log(5.0), math.log(45.0))))
            pause_prob = 0.1 if rng.random() < 0.1 else 0.0
        rec = synth_recording(
            person,
            stage,
            window_s,
            np.random.default_rng(int(rng.integers(0, 2**63 - 1))),
            environment=environment,
            rate_bpm=rate_bpm,
            pause_prob=pause_prob,
        )
        audio = _mix_background(rec.audio, rec.clean, rng, noise_bank, environment)
        audio = simulate_device(audio, rng)
        features = log_mel(audio, cfg)
        n_steps = len(features) // frame_stride
        phase = rec.cycles.phase_at(step_times_s(n_steps, frame_stride, cfg))
        rr_bpm, _ = rec.label(0.0, window_s)
        steady = len(rec.cycles) > 0 and pause_prob == 0.0
        period = 60.0 / rr_bpm * cfg.frames_per_second / frame_stride if steady and rr_bpm > 0 else 0.0
        examples.append(
            PhaseExample(features, phase, period, int(len(rec.cycles) > 0), "synth", float(rr_bpm))
        )
    return examples


def paced_windows(
    corpus_dirs: Sequence[Path | str],
    splits: Sequence[str],
    window_s: float,
    hop_s: float,
    frame_stride: int,
    seed: int,
    noise_bank: NoiseBank | None = None,
    augment: bool = True,
    cfg: FrontEndConfig = DEFAULT_FRONTEND,
) -> list[PhaseExample]:
    """Windows of the real recordings of ``splits`` in corpora whose recordings have one known rate."""
    rng = np.random.default_rng(seed)
    recordings: dict[Path, list] = defaultdict(list)
    for corpus in corpus_dirs:
        for seg in read_manifest(corpus):
            if seg.source != "synth" and seg.split in splits and seg.recording:
                recordings[audio_path(corpus, seg)].append(seg)
    examples = []
    for path, segs in sorted(recordings.items()):
        rates = {round(s.rr_bpm, 3) for s in segs}
        if len(rates) != 1:  # not paced at one rate: no period to supervise with
            continue
        rr_bpm = rates.pop()
        audio = load_audio(path, cfg.sample_rate)
        duration_s = len(audio) / cfg.sample_rate
        starts = np.arange(0.0, max(duration_s - window_s, 0.0) + 1e-9, hop_s)
        for start in starts:
            piece = audio[round(start * cfg.sample_rate) : round((start + window_s) * cfg.sample_rate)]
            if len(piece) < 0.5 * window_s * cfg.sample_rate:
                continue
            if augment:
                if noise_bank and rng.random() < 0.4:
                    _, noise = noise_bank.draw(len(piece), rng)
                    piece = piece + scale_noise(piece, noise, float(rng.uniform(0.0, 30.0)))
                piece = simulate_device(piece, rng)
            features = log_mel(piece, cfg)
            n_steps = len(features) // frame_stride
            period = 60.0 / rr_bpm * cfg.frames_per_second / frame_stride
            examples.append(
                PhaseExample(features, np.full(n_steps, UNKNOWN), period, 1, segs[0].source, float(rr_bpm))
            )
    return examples


def noise_windows(
    noise_bank: NoiseBank,
    n: int,
    window_s: float,
    frame_stride: int,
    seed: int,
    cfg: FrontEndConfig = DEFAULT_FRONTEND,
) -> list[PhaseExample]:
    """Stretches of real noise (no one breathing), labelled "other" at every step."""
    if not noise_bank:
        return []
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(n):
        name, piece = noise_bank.draw(round(window_s * cfg.sample_rate), rng)
        piece = simulate_device(piece, rng)
        features = log_mel(piece, cfg)
        n_steps = len(features) // frame_stride
        examples.append(PhaseExample(features, np.full(n_steps, OTHER), 0.0, 0, f"noise/{name}", 0.0))
    return examples


@dataclasses.dataclass
class PhaseBatch:
    features: torch.Tensor  # [B, T, F]
    lengths: torch.Tensor  # [B] frames
    phase: torch.Tensor  # [B, S] labels (-1 unknown and padding)
    period_steps: torch.Tensor  # [B]
    breathing: torch.Tensor  # [B]


def collate_phase(examples: Sequence[PhaseExample], frame_stride: int) -> PhaseBatch:
    longest = max(len(e.features) for e in examples)
    steps = longest // frame_stride
    feats = np.zeros((len(examples), longest, examples[0].features.shape[1]), np.float32)
    phase = np.full((len(examples), steps), UNKNOWN, np.int64)
    for row, e in enumerate(examples):
        feats[row, : len(e.features)] = e.features
        phase[row, : len(e.phase)] = e.phase[:steps]
    return PhaseBatch(
        features=torch.from_numpy(feats),
        lengths=torch.tensor([len(e.features) for e in examples]),
        phase=torch.from_numpy(phase),
        period_steps=torch.tensor([e.period_steps for e in examples], dtype=torch.float32),
        breathing=torch.tensor([e.breathing for e in examples]),
    )
