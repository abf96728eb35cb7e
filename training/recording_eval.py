"""Recording-level evaluation: what a person would be told, per recording, by each method.

The rows of the report's recording-level section (:func:`evaluation_set`):

- **RRuJO, per device**: each held-out recording whole (real chest audio, paced rate known);
- **synthetic, per stage**: each held-out synthetic recording whole, as generated (its truth is the
  duration-weighted mean of its segments' labels, i.e. cycles per minute over the covered span);
- **synthetic + real noise**: the same recordings mixed with the *evaluation* part of the real noise
  recordings (:mod:`training.real_noise`, never heard in training) at 10-20, 0-10 and -5-0 dB;
- **no breathing**: the held-out synthetic no-breath clips and 30 s stretches of the evaluation part of
  each real noise recording, where any number is a false rate.

Methods (:func:`method_answers`): the estimator (:mod:`training.estimator`, the product), the DSP
baseline on the whole recording (always a number unless the audio is flat), and the paper-style
segment heads of the same network (6 s windows every 3 s, confidence-weighted median of their RR
regression), which is what the project answered before the estimator.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.audio import AudioError, load_audio
from training.augment import scale_noise
from training.dsp_baseline import estimate_rr_dsp
from training.estimator import (
    DEFAULT_ESTIMATOR,
    EstimatorConfig,
    PhaseTrack,
    WindowEvidence,
    decide,
    decide_many,
    phase_track,
    segment_outputs,
    window_estimate,
    window_evidence,
)
from training.frontend import SAMPLE_RATE_HZ
from training.logmel import log_mel
from training.manifest import Segment, audio_path, read_manifest
from training.models import RRModel
from training.real_noise import NoiseBank

NOISE_MIX_BANDS_DB = ((10.0, 20.0), (0.0, 10.0), (-5.0, 0.0))
NO_BREATH = "no breathing"


@dataclasses.dataclass
class EvalRecording:
    name: str
    group: str  # the report row
    audio: np.ndarray  # 16 kHz mono
    rr_bpm: float | None  # truth; None = nobody breathing
    steady: bool  # one paced rate throughout (the rolling-window analysis uses these)


def _spans(corpus: Path, split: str) -> dict[str, list]:
    by_recording: dict[str, list] = defaultdict(list)
    for seg in read_manifest(corpus):
        if seg.split == split and seg.recording:
            by_recording[seg.recording].append(seg)
    return by_recording


def _group_of(seg: Segment) -> str:
    if seg.source.startswith("rrujo/"):
        return "RRuJO " + seg.source.split("/", 1)[1]
    if seg.source == "synth":
        if seg.stage is None:
            return "synthetic, no stage" if seg.rr_bpm > 0 else f"{NO_BREATH}: synthetic"
        return f"synthetic, stage {seg.stage}"
    return seg.source


def evaluation_set(
    corpus_dirs: Sequence[Path | str], split: str, noise_bank: NoiseBank, seed: int = 0
) -> list[EvalRecording]:
    rng = np.random.default_rng(seed)
    recordings: list[EvalRecording] = []
    for corpus in map(Path, corpus_dirs):
        for name, segs in sorted(_spans(corpus, split).items()):
            segs.sort(key=lambda s: s.start_s)
            start_s, end_s = segs[0].start_s, segs[-1].end_s
            try:
                audio = load_audio(audio_path(corpus, segs[0]), SAMPLE_RATE_HZ, start_s=start_s, end_s=end_s)
            except AudioError:
                continue
            if len(audio) < 8 * SAMPLE_RATE_HZ:
                continue
            weights = np.array([s.duration_s for s in segs])
            truth = float(np.dot(weights, [s.rr_bpm for s in segs]) / weights.sum())
            group = _group_of(segs[0])
            breathing = truth > 0.5
            steady = len({round(s.rr_bpm, 3) for s in segs}) == 1 and breathing
            recordings.append(EvalRecording(name, group, audio, truth if breathing else None, steady))
            if (group.startswith("synthetic, stage") or not breathing) and noise_bank:
                lo, hi = NOISE_MIX_BANDS_DB[len(recordings) % len(NOISE_MIX_BANDS_DB)]
                noise_name, noise = noise_bank.draw(len(audio), rng)
                if breathing:
                    mixed = audio + scale_noise(audio, noise, float(rng.uniform(lo, hi)))
                else:  # nothing to measure an SNR against: the noise at -50..-25 dBFS
                    level = 10 ** (rng.uniform(-50.0, -25.0) / 20) / max(float(np.std(noise)), 1e-9)
                    mixed = audio + (noise * level).astype(np.float32)
                recordings.append(
                    EvalRecording(
                        f"{name}+{noise_name}",
                        f"synthetic + real noise, {lo:g} to {hi:g} dB"
                        if breathing
                        else f"{NO_BREATH}: synthetic + real noise",
                        mixed,
                        truth if breathing else None,
                        False,
                    )
                )
    for noise_name in sorted(noise_bank.signals) if noise_bank else []:
        piece = noise_bank.signals[noise_name][: 30 * SAMPLE_RATE_HZ]
        if len(piece) >= 8 * SAMPLE_RATE_HZ:
            recordings.append(
                EvalRecording(f"noise/{noise_name}", f"{NO_BREATH}: real noise", piece, None, False)
            )
    return recordings


@dataclasses.dataclass(frozen=True)
class Answer:
    rr_bpm: float | None
    reason: str | None = None


@dataclasses.dataclass
class RecordingEvidence:
    """Everything the methods need from one recording, computed once (configs are then cheap)."""

    whole: WindowEvidence
    dsp_rr_bpm: float
    segment_rr_bpm: float


def recording_evidence(
    rec: EvalRecording, model: RRModel, with_segments: bool = True, track: PhaseTrack | None = None
) -> RecordingEvidence:
    """``track``: the recording's phase track when the caller has it already (it is the costly part)."""
    track = phase_track(model, rec.audio) if track is None else track
    duration_s = len(rec.audio) / SAMPLE_RATE_HZ
    return RecordingEvidence(
        window_evidence(rec.audio, track, 0.0, duration_s),
        estimate_rr_dsp(rec.audio).rr_bpm if with_segments else math.nan,
        segment_outputs(log_mel(rec.audio), model, duration_s)[1] if with_segments else math.nan,
    )


def method_answers(evidence: RecordingEvidence, cfg: EstimatorConfig) -> dict[str, Answer]:
    ours = decide(evidence.whole, cfg)
    dsp = evidence.dsp_rr_bpm
    return {
        "estimator": Answer(ours.rr_bpm, ours.reason),
        "DSP baseline": Answer(None, "flat") if math.isnan(dsp) else Answer(dsp),
        "segment heads": Answer(evidence.segment_rr_bpm),
    }


def rolling_errors(
    rec: EvalRecording,
    model: RRModel,
    cfg: EstimatorConfig,
    windows_s: Sequence[float],
    hop_s: float = 5.0,
    track: PhaseTrack | None = None,
) -> dict[float, list[float]]:
    """Per window length: |rolling rate - truth| at every instant a full window is available
    (a rolling window that answers nothing counts as missing, not as an error). ``track``: as for
    :func:`recording_evidence`."""
    track = phase_track(model, rec.audio) if track is None else track
    duration_s = len(rec.audio) / SAMPLE_RATE_HZ
    out: dict[float, list[float]] = {}
    for window_s in windows_s:
        errors = []
        for end_s in np.arange(window_s, duration_s + 1e-9, hop_s):
            w = window_estimate(rec.audio, track, end_s - window_s, end_s, cfg)
            if w.rr_bpm is not None and rec.rr_bpm is not None:
                errors.append(abs(w.rr_bpm - rec.rr_bpm))
        out[window_s] = errors
    return out


def summarise(answers: Sequence[tuple[EvalRecording, dict[str, Answer]]]) -> dict[str, dict[str, dict]]:
    """Per group and method: n, MAE over the recordings answered, share answered (coverage), and for
    no-breath groups the share given a rate (false rates)."""
    table: dict[str, dict[str, dict]] = defaultdict(dict)
    groups = sorted({rec.group for rec, _ in answers})
    methods = list(answers[0][1]) if answers else []
    for group in groups:
        rows = [(rec, a) for rec, a in answers if rec.group == group]
        for method in methods:
            given = [(rec, bpm) for rec, a in rows if (bpm := a[method].rr_bpm) is not None]
            entry: dict = {"n": len(rows), "answered": len(given) / len(rows)}
            if rows[0][0].rr_bpm is None:
                entry["false_rate_share"] = entry["answered"]
            else:
                errors = [
                    abs(bpm - rec.rr_bpm) for rec, bpm in given if rec.rr_bpm is not None
                ]  # (all, here)
                entry["mae_bpm"] = float(np.mean(errors)) if errors else math.nan
                entry["within_1_bpm"] = float(np.mean(np.array(errors) <= 1.0)) if errors else math.nan
                entry["no_breathing_share"] = sum(a[method].reason == "no_breathing" for _, a in rows) / len(
                    rows
                )
            table[group][method] = entry
    return dict(table)


# -- calibration: the estimator's settings, chosen on validation recordings ----------------------------

MISS_PENALTY_BPM = 5.0  # a breathing recording left unanswered costs this much in the objective
# A no-breath recording answered "too noisy to tell" is not wrong, but the person should hear "no
# breathing heard": it costs this much, a fifth of a false rate.
WRONG_REASON_PENALTY_BPM = 1.0

CALIBRATION_GRID = {
    "adaptive": (True, False),
    "learned_weight": (0.0, 0.25, 0.5, 0.75, 1.0),
    "min_activity": (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5),
    "min_confidence": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3),
}
# The floor: on every real validation group the chosen settings may not be worse than the DSP's own
# autocorrelation by more than this, nor answer fewer than REAL_MIN_ANSWERED of its recordings.
REAL_FLOOR_SLACK_BPM = 0.05
REAL_MIN_ANSWERED = 0.95
DSP_FLOOR = EstimatorConfig(learned_weight=0.0, adaptive=False, min_activity=0.0, min_confidence=0.0)


def _answers(evidence: Sequence[WindowEvidence], cfg: EstimatorConfig) -> list:
    return decide_many(evidence, cfg)


def calibration_loss(
    recordings: Sequence[EvalRecording], evidence: Sequence[WindowEvidence], cfg: EstimatorConfig
) -> float:
    """Mean over the validation groups of: the rate error of breathing recordings (an unanswered one
    counts :data:`MISS_PENALTY_BPM`), or for no-breath ones :data:`MISS_PENALTY_BPM` per false rate
    and :data:`WRONG_REASON_PENALTY_BPM` per "too noisy" where "no breathing" was right. Each group
    counts once, so the real recordings weigh as much as the many synthetic ones."""
    per_group: dict[str, list[float]] = defaultdict(list)
    for rec, answer in zip(recordings, _answers(evidence, cfg), strict=True):
        if rec.rr_bpm is None:
            if answer.rr_bpm is not None:
                per_group[rec.group].append(MISS_PENALTY_BPM)
            else:
                per_group[rec.group].append(
                    0.0 if answer.reason == "no_breathing" else WRONG_REASON_PENALTY_BPM
                )
        elif answer.rr_bpm is None:
            per_group[rec.group].append(MISS_PENALTY_BPM)
        else:
            per_group[rec.group].append(min(abs(answer.rr_bpm - rec.rr_bpm), 2 * MISS_PENALTY_BPM))
    return float(np.mean([np.mean(v) for v in per_group.values()]))


def real_group_errors(
    recordings: Sequence[EvalRecording], evidence: Sequence[WindowEvidence], cfg: EstimatorConfig
) -> dict[str, tuple[float, float]]:
    """Per real (non-synthetic) breathing group: (MAE over answered, share answered)."""
    errors: dict[str, list[float]] = defaultdict(list)
    asked: dict[str, int] = defaultdict(int)
    for rec, answer in zip(recordings, _answers(evidence, cfg), strict=True):
        if rec.rr_bpm is None or rec.group.startswith(("synthetic", NO_BREATH)):
            continue
        asked[rec.group] += 1
        if answer.rr_bpm is not None:
            errors[rec.group].append(abs(answer.rr_bpm - rec.rr_bpm))
    return {
        g: (float(np.mean(errors[g])) if errors[g] else math.inf, len(errors[g]) / n)
        for g, n in asked.items()
    }


def calibrate(
    recordings: Sequence[EvalRecording],
    evidence: Sequence[WindowEvidence],
    base: EstimatorConfig = DEFAULT_ESTIMATOR,
) -> tuple[EstimatorConfig, float]:
    """The grid point with the lowest :func:`calibration_loss` among those that keep the DSP floor on
    every real validation group (:data:`REAL_FLOOR_SLACK_BPM`, :data:`REAL_MIN_ANSWERED`); ties go to
    the earlier point (more DSP, fewer abstentions)."""
    floor = real_group_errors(recordings, evidence, DSP_FLOOR)
    best: tuple[float, EstimatorConfig] | None = None
    for adaptive, w, activity, confidence in itertools.product(
        CALIBRATION_GRID["adaptive"],
        CALIBRATION_GRID["learned_weight"],
        CALIBRATION_GRID["min_activity"],
        CALIBRATION_GRID["min_confidence"],
    ):
        cfg = dataclasses.replace(
            base, adaptive=bool(adaptive), learned_weight=w, min_activity=activity, min_confidence=confidence
        )
        real = real_group_errors(recordings, evidence, cfg)
        if any(
            mae > floor[g][0] + REAL_FLOOR_SLACK_BPM or answered < REAL_MIN_ANSWERED
            for g, (mae, answered) in real.items()
        ):
            continue
        loss = calibration_loss(recordings, evidence, cfg)
        if best is None or loss < best[0] - 1e-9:
            best = (loss, cfg)
    if best is None:  # nothing keeps the floor: the DSP's own autocorrelation, gated as little as allowed
        cfg = dataclasses.replace(base, learned_weight=0.0, min_activity=0.05, min_confidence=0.0)
        return cfg, calibration_loss(recordings, evidence, cfg)
    return best[1], best[0]
