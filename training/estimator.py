"""The one respiratory-rate estimator: model phase output + DSP candidates over long windows.

Every path that turns audio into a rate uses this module: ``python -m training.estimate``, the
evaluation report, the demo's simulated app and the benchmarks (the Core ML package's rolling window
follows the same rules). How a rate is read from a window of audio:

1. **Phase track.** The model (:class:`training.models.RRModel`) runs once over the whole recording and
   gives, at each of its steps (20 per second), the probabilities of inhale, exhale and other. The
   *phase signal* ``p(inhale) - p(exhale)`` goes up and down once per breath, so its fundamental is
   the breathing rate itself, not twice it: an inhale and an exhale that sound alike (the octave
   error of every loudness-based method) still have opposite signs. The *breath activity*
   ``p(inhale) + p(exhale)`` says how much of the window sounded like breathing.
2. **Periodicity.** The window's phase signal is autocorrelated (biased, normalised); so are the DSP
   baseline's band envelopes (:func:`training.dsp_baseline.envelope_autocorrelation`), on the same
   lag grid. The two are mixed, ``a * learned + (1 - a) * dsp``, where each side's share follows how
   periodic it is in this window: ``a = w P_l / (w P_l + (1 - w) P_d)``, ``P`` the square of the
   side's highest peak at breathing lags, ``w`` the prior ``learned_weight`` (the DSP is the
   floor: ``w = 0`` is exactly the DSP baseline's autocorrelation), and the period is the strongest
   peak at 1-15 s with the DSP's octave check (:func:`training.dsp_baseline.pick_period`).
3. **Answer or reason.** A window whose breath activity is under ``min_activity`` answers
   ``no_breathing``; one whose periodicity (the mixed autocorrelation at the chosen period) is under
   ``min_confidence`` answers ``too_noisy``; otherwise the rate, clipped to nothing: a period outside
   4-60 breaths/min cannot be chosen. ``rr_confidence`` is the periodicity scaled by the activity.
4. **Count.** Breaths are counted as inhale onsets of the phase signal, at least half a period apart;
   with no confident rate the count is 0.

The recording's rate uses the whole recording as one window; the ``timeline`` gives the rolling rate
for the window ending at each instant (default 30 s, settable 15-60 s), as a stream would see it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from training import periodicity
from training.dsp_baseline import DEFAULT_CONFIG as DSP_CONFIG
from training.dsp_baseline import band_powers, pick_period
from training.frontend import DEFAULT_FRONTEND, FrontEndConfig
from training.logmel import log_mel, stream_log_mel
from training.manifest import BREATH_CLASSES, HEAVY_THRESHOLD_BPM
from training.models import RRModel

MIN_RATE_BPM = periodicity.MIN_RATE_BPM
MAX_RATE_BPM = periodicity.MAX_RATE_BPM
DEFAULT_WINDOW_S = 30.0
WINDOW_RANGE_S = (15.0, 60.0)
MIN_DURATION_S = 4.0
REASONS = ("no_breathing", "too_noisy")


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
    """Settings of the estimator; the defaults were chosen on validation data (docs/results.md)."""

    learned_weight: float = 0.5  # prior share of the model's phase autocorrelation in the mixed one
    adaptive: bool = True  # shares follow each side's periodicity in the window (module doc, step 2)
    min_activity: float = 0.15  # mean p(inhale) + p(exhale) below this: no breathing heard
    min_confidence: float = 0.15  # mixed autocorrelation at the period below this: too noisy to tell
    window_s: float = DEFAULT_WINDOW_S
    timeline_hop_s: float = 5.0

    def __post_init__(self) -> None:
        lo, hi = WINDOW_RANGE_S
        if not lo <= self.window_s <= hi:
            raise ValueError(f"window_s must be in {lo:g}-{hi:g} s, not {self.window_s:g}")
        if not 0.0 <= self.learned_weight <= 1.0:
            raise ValueError(f"learned_weight must be in [0, 1], not {self.learned_weight}")
        if self.timeline_hop_s <= 0:
            raise ValueError(f"timeline_hop_s must be positive, not {self.timeline_hop_s}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> EstimatorConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


DEFAULT_ESTIMATOR = EstimatorConfig()


@dataclasses.dataclass(frozen=True)
class WindowEstimate:
    """One window's answer: a rate, or ``None`` with the reason."""

    rr_bpm: float | None
    rr_confidence: float
    reason: str | None
    activity: float

    def to_json(self) -> dict:
        return {
            "rr_bpm": None if self.rr_bpm is None else round(self.rr_bpm, 2),
            "rr_confidence": round(self.rr_confidence, 3),
            "reason": self.reason,
        }


@dataclasses.dataclass
class PhaseTrack:
    """The model's view of a whole recording, and the DSP's band powers of it."""

    probs: np.ndarray  # [steps, 3] inhale, exhale, other
    steps_per_second: float
    breath_probs: np.ndarray  # [3] none, normal, heavy for the whole recording (segment head)
    noise_prob: float  # P(noisy) for the whole recording (segment head)
    # log(power + LOG_POWER_EPS) per DSP band and 25 ms frame, float32 [bands, frames], computed once
    # for every window to read (see window_evidence)
    dsp_log_power: np.ndarray | None = None

    @property
    def phase(self) -> np.ndarray:
        return self.probs[:, 0] - self.probs[:, 1]

    @property
    def activity(self) -> np.ndarray:
        return self.probs[:, 0] + self.probs[:, 1]


def dsp_log_power(audio: np.ndarray, sample_rate: int = DEFAULT_FRONTEND.sample_rate) -> np.ndarray:
    """The DSP's band log powers of a recording, as the package's states hold them."""
    power, _ = band_powers(audio, sample_rate, DSP_CONFIG)
    return np.log(power + np.float32(periodicity.LOG_POWER_EPS)).astype(np.float32)


STREAM_CHUNK_FRAMES = 10  # feature frames per call of the package's default 100 ms chunk


def phase_track(
    model: RRModel,
    audio: np.ndarray,
    frontend: FrontEndConfig = DEFAULT_FRONTEND,
    with_dsp: bool = True,
) -> PhaseTrack:
    """The model's phase track of a whole recording, computed as the package computes it, and (with
    ``with_dsp``) the DSP's band powers once, for every window to share.

    As the package: features from the DFT form of the front-end with the stream's zero tail in front
    (:func:`training.frontend.stream_log_mel`), and the model run 100 ms at a time
    (:meth:`training.models.RRModel.chunk_steps`). Why not one forward over the whole recording: the
    LSTM amplifies float32 round-off, and a whole-sequence forward (other matrix shapes, the running
    norm in blocks) drifts up to 0.016 in probability from the chunked one within 40 s of a real
    recording, enough to move a weakly periodic window's rate by 2e-3 breaths/min. Chunked like the
    package, the offline track stays within 1e-4 of the package's (measured 7e-5).
    """
    return phase_tracks(model, [audio], frontend, with_dsp)[0]


PHASE_TRACK_BATCH = 32  # recordings run side by side in one chunk loop (evaluation, many recordings)


@torch.no_grad()
def phase_tracks(
    model: RRModel,
    audios: Sequence[np.ndarray],
    frontend: FrontEndConfig = DEFAULT_FRONTEND,
    with_dsp: bool = True,
    batch: int = PHASE_TRACK_BATCH,
) -> list[PhaseTrack]:
    """:func:`phase_track` of several recordings, up to ``batch`` of similar length at once.

    Why: a chunk of one recording is a few hundred tiny tensor ops, so a minute of audio costs about
    0.6 s of CPU one recording at a time, almost all of it per-op overhead; a batch of recordings pays
    that overhead once per chunk. Each recording is zero-padded at its end to the batch's longest (the
    model is causal, so padding changes none of its own steps) and its track is cut back to its own
    steps. Rows of a batch differ from one recording alone only by float32 round-off (the matrix
    shapes differ); a single recording is computed exactly as :func:`phase_track` always has.
    """
    order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
    tracks: list[PhaseTrack | None] = [None] * len(audios)
    for first in range(0, len(order), batch):
        group = order[first : first + batch]
        features = [stream_log_mel(audios[i], frontend, method="dft") for i in group]
        for i, track in zip(group, _batch_tracks(model, features), strict=True):
            log_power = dsp_log_power(audios[i], frontend.sample_rate) if with_dsp else None
            tracks[i] = dataclasses.replace(track, dsp_log_power=log_power)
    return [t for t in tracks if t is not None]


def _batch_tracks(model: RRModel, features: Sequence[np.ndarray]) -> list[PhaseTrack]:
    """The chunk loop of :func:`phase_tracks` over recordings' features ``[frames, n_mels]``."""
    stride = model.frame_stride
    usable = [f.shape[0] - f.shape[0] % stride for f in features]
    longest = max(usable)
    padded = np.zeros((len(features), longest, model.n_mels), np.float32)
    for row, (f, n) in enumerate(zip(features, usable, strict=True)):
        padded[row, :n] = f[:n]
    x = torch.from_numpy(padded)
    state = model.initial_state(len(features))
    steps = []
    for first in range(0, longest, STREAM_CHUNK_FRAMES):
        out, state = model.chunk_steps(x[:, first : first + STREAM_CHUNK_FRAMES], state)
        steps.append(out)
    lstm_out = torch.cat(steps, 1) if steps else torch.zeros(len(features), 0, model.units)
    tracks = []
    for row, n in enumerate(usable):
        own = lstm_out[row : row + 1, : n // stride]
        pooled = own.mean(1) if own.shape[1] else torch.zeros(1, model.units)
        breath = model.breath_head(model.breath_embedding(pooled))
        tracks.append(
            PhaseTrack(
                probs=torch.softmax(model.phase_head(own)[0], -1).numpy(),
                steps_per_second=model.steps_per_second,
                breath_probs=torch.softmax(breath[0], -1).numpy().astype(np.float64),
                noise_prob=float(torch.softmax(model.noise_head(model.noise_embedding(pooled))[0], -1)[1]),
            )
        )
    return tracks


def window_frames(
    start_s: float, end_s: float, sample_rate: int = DEFAULT_FRONTEND.sample_rate
) -> tuple[int, int]:
    """The DSP frames of ``[start_s, end_s)``: those lying wholly inside the window, on one grid from
    the recording's start (as in a stream), so every window reads the powers computed once."""
    hop = round(DSP_CONFIG.hop_s * sample_rate)
    frame = round(DSP_CONFIG.frame_s * sample_rate)
    first = -(-round(start_s * sample_rate) // hop)  # first frame starting at or after the window
    stop = (round(end_s * sample_rate) - frame) // hop + 1  # frames ending at or before its end
    return first, max(first, stop)


def learned_rate(phase: np.ndarray, steps_per_second: float) -> tuple[float, float]:
    """Rate and periodicity from the phase signal alone (training's model selection uses this)."""
    max_lag = min(math.ceil(1.1 * steps_per_second * 60.0 / MIN_RATE_BPM), int(0.75 * len(phase)))
    min_lag = math.floor(steps_per_second * 60.0 / MAX_RATE_BPM)
    x = phase - phase.mean()
    energy = float(np.dot(x, x))
    if energy <= 1e-12 or max_lag <= min_lag + 2:
        return math.nan, 0.0
    size = 1 << math.ceil(math.log2(2 * len(x)))
    spec = np.fft.rfft(x, size)
    r = np.fft.irfft(spec * np.conj(spec), size)[: max_lag + 1] / energy
    lag, height = pick_period(r, min_lag, DSP_CONFIG)
    return 60.0 * steps_per_second / lag, float(height)


@dataclasses.dataclass
class WindowEvidence:
    """What a window offers to decide on (:class:`training.periodicity.Evidence` of one window)."""

    r_learned: torch.Tensor  # [MAX_LAG + 1]
    r_dsp: torch.Tensor  # [MAX_LAG + 1]
    activity: float
    max_lag: float
    steps_per_second: float


@torch.no_grad()
def window_evidence(
    audio: np.ndarray,
    track: PhaseTrack,
    start_s: float,
    end_s: float,
    sample_rate: int = DEFAULT_FRONTEND.sample_rate,
) -> WindowEvidence:
    """Autocorrelations of the phase signal and of the DSP's band envelopes over ``[start_s, end_s)``."""
    rate = track.steps_per_second
    lo, hi = round(start_s * rate), round(end_s * rate)
    log_power = track.dsp_log_power
    if log_power is None:
        log_power = dsp_log_power(audio, sample_rate)
    first, stop = window_frames(start_s, end_s, sample_rate)
    probs = torch.from_numpy(np.ascontiguousarray(track.probs[lo:hi], dtype=np.float32))
    power = torch.from_numpy(np.ascontiguousarray(log_power[:, first:stop]))[None]
    ev = periodicity.evidence(
        (probs[:, 0] - probs[:, 1])[None],
        (probs[:, 0] + probs[:, 1])[None],
        torch.tensor([float(len(probs))]),
        power,
        torch.tensor([float(power.shape[-1])]),
    )
    return WindowEvidence(ev.r_learned[0], ev.r_dsp[0], float(ev.activity[0]), float(ev.max_lag[0]), rate)


@torch.no_grad()
def decide_many(evidence: Sequence[WindowEvidence], cfg: EstimatorConfig) -> list[WindowEstimate]:
    """A rate, "no breathing" or "too noisy" for each window (steps 2-3 of the module doc), in one
    batch of tensor operations (:func:`training.periodicity.decide`, the package's own arithmetic)."""
    if not evidence:
        return []
    batch = periodicity.Evidence(
        torch.stack([e.r_learned for e in evidence]),
        torch.stack([e.r_dsp for e in evidence]),
        torch.tensor([e.activity for e in evidence], dtype=torch.float32),
        torch.tensor([e.max_lag for e in evidence], dtype=torch.float32),
    )
    n = len(evidence)

    def setting(value: float | bool) -> torch.Tensor:
        return torch.full((n,), value, dtype=torch.bool if isinstance(value, bool) else torch.float32)

    out = periodicity.decide(
        batch,
        setting(float(cfg.learned_weight)),
        setting(bool(cfg.adaptive)),
        setting(float(cfg.min_activity)),
        setting(float(cfg.min_confidence)),
    )
    return [
        WindowEstimate(
            float(out.rr_bpm[i]) if int(out.reason[i]) == periodicity.RATE else None,
            float(out.rr_confidence[i]),
            periodicity.REASON_NAMES.get(int(out.reason[i])),
            evidence[i].activity,
        )
        for i in range(n)
    ]


def decide(evidence: WindowEvidence, cfg: EstimatorConfig) -> WindowEstimate:
    """A rate, "no breathing" or "too noisy" from a window's evidence (steps 2-3 of the module doc)."""
    return decide_many([evidence], cfg)[0]


def window_estimate(
    audio: np.ndarray,
    track: PhaseTrack,
    start_s: float,
    end_s: float,
    cfg: EstimatorConfig,
    sample_rate: int = DEFAULT_FRONTEND.sample_rate,
) -> WindowEstimate:
    """The rate of ``audio[start_s:end_s]`` from the phase track and the DSP (see the module doc)."""
    return decide(window_evidence(audio, track, start_s, end_s, sample_rate), cfg)


SEGMENT_WINDOW_S = 6.0
SEGMENT_HOP_S = 3.0


def segment_starts(
    duration_s: float, window_s: float = SEGMENT_WINDOW_S, hop_s: float = SEGMENT_HOP_S
) -> list[float]:
    """Start times of the segment heads' windows; the last window is aligned to the end."""
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
def segment_outputs(features: np.ndarray, model: RRModel, duration_s: float) -> tuple[list[dict], float]:
    """The paper's segment heads on 6 s windows every 3 s: per-window outputs, and their
    confidence-weighted median rate (weight ``P(breathing) x P(clean)``), the paper-style answer."""
    frames_per_s = model.frames_per_second
    starts = segment_starts(duration_s)
    window_frames = min(int(SEGMENT_WINDOW_S * frames_per_s) - 3, len(features))
    batch = np.stack(
        [
            features[min(round(s * frames_per_s), len(features) - window_frames) :][:window_frames]
            for s in starts
        ]
    )
    out = model.eval()(torch.from_numpy(batch))
    rr = model.rr_to_bpm(out.rr_z).numpy().astype(np.float64)
    rc = out.rc.numpy().astype(np.float64)
    breath_probs = torch.softmax(out.breath_logits, -1).numpy().astype(np.float64)
    noise = torch.softmax(out.noise_logits, -1)[:, 1].numpy().astype(np.float64)
    segments = [
        {
            "start_s": s,
            "end_s": round(min(s + SEGMENT_WINDOW_S, duration_s), 3),
            "rr_bpm": round(float(rr[i]), 2),
            "respiration_count": round(float(rc[i]), 2),
            "breath_class": BREATH_CLASSES[int(np.argmax(breath_probs[i]))],
            "breath_probs": [round(float(p), 4) for p in breath_probs[i]],
            "noise_prob": round(float(noise[i]), 4),
        }
        for i, s in enumerate(starts)
    ]
    return segments, weighted_median(rr, (1.0 - breath_probs[:, 0]) * (1.0 - noise) + 1e-3)


def count_breaths(phase: np.ndarray, steps_per_second: float, rr_bpm: float) -> int:
    """Inhale onsets: upward crossings of the smoothed phase signal, at least half a period apart."""
    if len(phase) < 3:
        return 0
    width = max(1, round(0.15 * steps_per_second))
    smooth = np.convolve(phase, np.ones(width) / width, mode="same")
    gap = 0.5 * 60.0 / rr_bpm * steps_per_second
    onsets: list[int] = []
    armed = False
    for i, value in enumerate(smooth):
        if value < -0.1:
            armed = True
        elif armed and value > 0.1 and (not onsets or i - onsets[-1] >= gap):
            onsets.append(i)
            armed = False
    return len(onsets)


def breath_class_of(estimate: WindowEstimate) -> str:
    if estimate.rr_bpm is None:
        return BREATH_CLASSES[0] if estimate.reason == "no_breathing" else "unknown"
    return "heavy" if estimate.rr_bpm >= HEAVY_THRESHOLD_BPM else "normal"


def timeline_ends(duration_s: float, hop_s: float) -> list[float]:
    """Instants at which the rolling rate is reported: every ``hop_s`` and at the end."""
    ends = list(np.arange(hop_s, duration_s + 1e-9, hop_s))
    if not ends or duration_s - ends[-1] > 1e-6:
        ends.append(duration_s)
    return [round(float(t), 3) for t in ends]


def estimate_audio(
    audio: np.ndarray,
    model: RRModel,
    cfg: EstimatorConfig = DEFAULT_ESTIMATOR,
    frontend: FrontEndConfig = DEFAULT_FRONTEND,
    track: PhaseTrack | None = None,
) -> dict:
    """Whole-recording estimate and rolling timeline of 16 kHz mono ``audio`` (the ``estimate`` JSON).

    ``track``: the recording's :func:`phase_track`, when the caller computed it already (evaluation
    computes many recordings' tracks in one batch with :func:`phase_tracks`)."""
    duration_s = len(audio) / frontend.sample_rate
    if duration_s < MIN_DURATION_S:
        raise ValueError(f"audio is {duration_s:.2f} s long; at least {MIN_DURATION_S:g} s is needed")
    features = log_mel(audio, frontend)
    if float(np.std(audio)) < 1e-6:
        raise ValueError("the audio does not vary (a constant or DC signal): there is nothing to hear")
    track = phase_track(model, audio, frontend) if track is None else track
    whole = window_estimate(audio, track, 0.0, duration_s, cfg, frontend.sample_rate)
    segments, _ = segment_outputs(features, model, duration_s)
    count = 0
    if whole.rr_bpm is not None:
        count = count_breaths(track.phase, track.steps_per_second, whole.rr_bpm)
    timeline = []
    for end_s in timeline_ends(duration_s, cfg.timeline_hop_s):
        start_s = max(0.0, end_s - cfg.window_s)
        if end_s - start_s < MIN_DURATION_S:
            continue
        w = window_estimate(audio, track, start_s, end_s, cfg, frontend.sample_rate)
        timeline.append({"start_s": round(start_s, 3), "end_s": end_s, **w.to_json()})
    return {
        "duration_s": round(duration_s, 3),
        **whole.to_json(),
        "respiration_count": count,
        "breath_class": breath_class_of(whole),
        "breath_activity": round(whole.activity, 3),
        "noise_prob": round(track.noise_prob, 4),
        "window_s": cfg.window_s,
        "timeline": timeline,
        "segments": segments,
    }


def recording_rates(
    audio: np.ndarray,
    model: RRModel,
    cfg: EstimatorConfig,
    windows: Sequence[tuple[float, float]],
    frontend: FrontEndConfig = DEFAULT_FRONTEND,
) -> list[WindowEstimate]:
    """Estimates for several windows of one recording with one pass of the model (evaluation)."""
    track = phase_track(model, audio, frontend)
    return [window_estimate(audio, track, s, e, cfg, frontend.sample_rate) for s, e in windows]
