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

from training.dsp_baseline import DEFAULT_CONFIG as DSP_CONFIG
from training.dsp_baseline import band_envelopes, envelope_autocorrelation, pick_period
from training.frontend import DEFAULT_FRONTEND, FrontEndConfig
from training.logmel import log_mel
from training.manifest import BREATH_CLASSES, HEAVY_THRESHOLD_BPM
from training.models import RRModel

MIN_RATE_BPM = 4.0
MAX_RATE_BPM = 60.0
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
    """The model's view of a whole recording."""

    probs: np.ndarray  # [steps, 3] inhale, exhale, other
    steps_per_second: float
    breath_probs: np.ndarray  # [3] none, normal, heavy for the whole recording (segment head)
    noise_prob: float  # P(noisy) for the whole recording (segment head)
    # the DSP baseline's band envelopes of the whole recording, computed once (see window_evidence)
    dsp_envelopes: np.ndarray | None = None
    dsp_env_rate: float = 0.0

    @property
    def phase(self) -> np.ndarray:
        return self.probs[:, 0] - self.probs[:, 1]

    @property
    def activity(self) -> np.ndarray:
        return self.probs[:, 0] + self.probs[:, 1]


@torch.no_grad()
def phase_track(
    model: RRModel,
    features: np.ndarray,
    audio: np.ndarray | None = None,
    sample_rate: int = DEFAULT_FRONTEND.sample_rate,
) -> PhaseTrack:
    """Run ``model`` once over a recording's log-mel ``features`` [frames, n_mels]; with the
    recording's ``audio``, also compute the DSP's band envelopes once, for every window to share."""
    out = model.eval()(torch.from_numpy(np.ascontiguousarray(features))[None])
    envelopes, env_rate = (None, 0.0) if audio is None else band_envelopes(audio, sample_rate, DSP_CONFIG)
    return PhaseTrack(
        probs=torch.softmax(out.phase_logits[0], -1).numpy().astype(np.float64),
        steps_per_second=model.steps_per_second,
        breath_probs=torch.softmax(out.breath_logits[0], -1).numpy().astype(np.float64),
        noise_prob=float(torch.softmax(out.noise_logits[0], -1)[1]),
        dsp_envelopes=envelopes,
        dsp_env_rate=env_rate,
    )


def _window_envelopes(
    audio: np.ndarray, track: PhaseTrack, start_s: float, end_s: float, sample_rate: int
) -> tuple[np.ndarray, float]:
    """The DSP band envelopes of ``[start_s, end_s)``: the recording's envelope frames that lie wholly
    inside the window. Frames sit on one grid from the recording's start, as in a stream, so every
    window reads the envelopes computed once (no window computes its own)."""
    if track.dsp_envelopes is None:
        first_sample, last_sample = round(start_s * sample_rate), round(end_s * sample_rate)
        return band_envelopes(audio[first_sample:last_sample], sample_rate, DSP_CONFIG)
    hop = round(DSP_CONFIG.hop_s * sample_rate)
    frame = round(DSP_CONFIG.frame_s * sample_rate)
    first = -(-round(start_s * sample_rate) // hop)  # first frame starting at or after the window
    stop = (round(end_s * sample_rate) - frame) // hop + 1  # frames ending at or before its end
    return track.dsp_envelopes[:, first : max(first, stop)], track.dsp_env_rate


def _autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    x = x - x.mean()
    energy = float(np.dot(x, x))
    if energy <= 1e-12 or max_lag < 1:
        return np.zeros(max_lag + 1)
    size = 1 << math.ceil(math.log2(2 * len(x)))
    spec = np.fft.rfft(x, size)
    return np.fft.irfft(spec * np.conj(spec), size)[: max_lag + 1] / energy


def learned_rate(phase: np.ndarray, steps_per_second: float) -> tuple[float, float]:
    """Rate and periodicity from the phase signal alone (training's model selection uses this)."""
    max_lag = min(math.ceil(1.1 * steps_per_second * 60.0 / MIN_RATE_BPM), int(0.75 * len(phase)))
    min_lag = math.floor(steps_per_second * 60.0 / MAX_RATE_BPM)
    r = _autocorrelation(phase, max_lag)
    if not r.any() or len(r) <= min_lag + 2:
        return math.nan, 0.0
    lag, height = pick_period(r, min_lag, DSP_CONFIG)
    return 60.0 * steps_per_second / lag, float(height)


@dataclasses.dataclass
class WindowEvidence:
    """What a window offers to decide on: both autocorrelations on one lag grid, and the activity."""

    r_learned: np.ndarray
    r_dsp: np.ndarray
    activity: float
    steps_per_second: float


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
    activity = float(track.activity[lo:hi].mean()) if hi > lo else 0.0
    envelopes, env_rate = _window_envelopes(audio, track, start_s, end_s, sample_rate)
    r_dsp, env_rate, _, _ = envelope_autocorrelation(envelopes, env_rate, DSP_CONFIG)
    # the DSP's envelopes run at 40 Hz; bring its autocorrelation onto the model's step grid
    dsp_lags_s = np.arange(len(r_dsp)) / env_rate
    n_lags = int(dsp_lags_s[-1] * rate) + 1 if len(r_dsp) else 1
    r_dsp = np.interp(np.arange(n_lags) / rate, dsp_lags_s, r_dsp) if len(r_dsp) else np.zeros(1)
    r_learned = _autocorrelation(track.phase[lo:hi], n_lags - 1)
    if len(r_learned) < n_lags:
        r_learned = np.pad(r_learned, (0, n_lags - len(r_learned)))
    return WindowEvidence(r_learned, r_dsp, activity, rate)


def mix(evidence: WindowEvidence, weight: float, adaptive: bool, min_lag: int) -> np.ndarray:
    """``a * learned + (1 - a) * dsp``: ``a = weight``, or with ``adaptive`` the prior ``weight``
    scaled by each side's periodicity (its highest peak at lags from ``min_lag``, squared)."""
    if adaptive and 0.0 < weight < 1.0:
        p_learned = max(float(evidence.r_learned[min_lag:].max(initial=0.0)), 0.0) ** 2
        p_dsp = max(float(evidence.r_dsp[min_lag:].max(initial=0.0)), 0.0) ** 2
        total = weight * p_learned + (1.0 - weight) * p_dsp
        weight = weight * p_learned / total if total > 0 else weight
    return weight * evidence.r_learned + (1.0 - weight) * evidence.r_dsp


def decide(evidence: WindowEvidence, cfg: EstimatorConfig) -> WindowEstimate:
    """A rate, "no breathing" or "too noisy" from a window's evidence (steps 2-3 of the module doc)."""
    activity = evidence.activity
    if activity < cfg.min_activity:
        return WindowEstimate(None, 0.0, "no_breathing", activity)
    rate = evidence.steps_per_second
    min_lag = math.floor(rate * 60.0 / MAX_RATE_BPM)
    r = mix(evidence, cfg.learned_weight, cfg.adaptive, min_lag)
    if not r.any() or len(r) <= min_lag + 2:
        return WindowEstimate(None, 0.0, "too_noisy", activity)
    lag, height = pick_period(r, min_lag, DSP_CONFIG)
    rr_bpm = 60.0 * rate / lag
    periodicity = float(np.clip(height, 0.0, 1.0))
    confidence = periodicity * min(1.0, activity / 0.5)
    if periodicity < cfg.min_confidence or not MIN_RATE_BPM <= rr_bpm <= MAX_RATE_BPM:
        return WindowEstimate(None, confidence, "too_noisy", activity)
    return WindowEstimate(rr_bpm, confidence, None, activity)


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
) -> dict:
    """Whole-recording estimate and rolling timeline of 16 kHz mono ``audio`` (the ``estimate`` JSON)."""
    duration_s = len(audio) / frontend.sample_rate
    if duration_s < MIN_DURATION_S:
        raise ValueError(f"audio is {duration_s:.2f} s long; at least {MIN_DURATION_S:g} s is needed")
    features = log_mel(audio, frontend)
    if float(np.std(audio)) < 1e-6:
        raise ValueError("the audio does not vary (a constant or DC signal): there is nothing to hear")
    track = phase_track(model, features, audio, frontend.sample_rate)
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
    track = phase_track(model, log_mel(audio, frontend), audio, frontend.sample_rate)
    return [window_estimate(audio, track, s, e, cfg, frontend.sample_rate) for s, e in windows]
