"""The torch modules traced into the ``.mlpackage``: front-end, model and rolling estimator, one chunk a call.

The app hands the package one chunk of 16 kHz mono audio (default 1600 samples = 100 ms) per call and
reads the answer; there is no app-side arithmetic. Inside the graph, per chunk:

1. **Model.** The audio tail kept from the previous call is put in front of the chunk, framed and
   transformed by the front-end's DFT as matrix products (:class:`training.logmel.LogMel`), and the
   new frames go through the model's chunk forward (:meth:`training.models.RRModel.chunk_steps`): the
   chunk's LSTM outputs and their breath phase, ``phase_probs`` (inhale / exhale / other every 50 ms).
2. **DSP.** The chunk, behind its own longer tail, gives the DSP's band powers of the 25 ms-hop frames
   that end inside it (:class:`training.periodicity.BandPowers`).
3. **Rolling window.** Ring buffers (states, oldest first) keep the window's phase signal, activity,
   LSTM outputs and band log powers (default 30 s); a counter of chunks says how much of them is
   filled. The estimator's window arithmetic (:mod:`training.periodicity`, the very functions the
   offline estimator runs) turns them into ``rr_bpm``, ``rr_confidence`` and ``rr_reason``;
   ``breathing`` follows from them, ``noise_prob`` is the model's noise head on the window's mean LSTM
   output, and ``respiration_count`` adds up the rolling rate over the chunks that had one.

So the rolling rate after ``k`` chunks is the offline estimator's rate for the window that ends at
``k`` chunks (``training.estimator.window_estimate``), which ``coreml verify`` and the tests check.

Start convention: after a reset the audio tails are zeros, i.e. the stream is treated as if silence
preceded it; :func:`offline_reference` runs the model offline with the same convention. The chunk must
be a whole number of 50 ms (800 samples: the front-end's 10 ms hop and the DSP's 25 ms hop both divide
it), so every call yields the same number of frames and steps.

Two variants share this code:
- :class:`ExplicitStreamer`: states are inputs ``*_in`` and outputs ``*_out`` in float32 (iOS 16+).
- :class:`StatefulStreamer`: states are buffers updated in place, converted to Core ML states (iOS 18+).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from training import periodicity
from training.dsp_baseline import DEFAULT_CONFIG as DSP_CONFIG
from training.estimator import DEFAULT_ESTIMATOR, MIN_DURATION_S, EstimatorConfig
from training.frontend import DEFAULT_FRONTEND, FrontEndConfig
from training.logmel import LogMel, stream_log_mel
from training.manifest import HEAVY_THRESHOLD_BPM
from training.models import RRModel, StreamState

OUTPUT_NAMES = (
    "rr_bpm",
    "rr_confidence",
    "rr_reason",
    "breathing",
    "noise_prob",
    "respiration_count",
    "phase_probs",
)
_MEASURED_AND_COUNTED_STATES = (
    "audio_tail",
    "conv_context",
    "lstm_h",
    "lstm_c",
    "norm_mean",
    "norm_count",
    "dsp_tail",
    "phase_window",
    "lstm_window",
    "band_window",
    "chunks_seen",
    "count_whole",
    "count_fraction",
)
# Every state that holds a measurement (not a count) is kept as its value rounded to fp16 plus the
# residual, two states: Core ML's MLState holds fp16, and with one fp16 state each the stateful package
# drifted from the offline estimator on real recordings (PSNR 10-23 dB: the LSTM amplifies the rounding
# of its state and of the running mean, and a window whose confidence sits at the threshold flips on the
# rounding of the buffers). Rebuilt in float32 each call, the pair holds about 22 bits; stored in float32
# (the explicit package) it is exact.
SPLIT_STATES = (
    "audio_tail",
    "conv_context",
    "lstm_h",
    "lstm_c",
    "norm_mean",
    "dsp_tail",
    "phase_window",
    "lstm_window",
    "band_window",
)
STATE_NAMES = (*_MEASURED_AND_COUNTED_STATES, *(f"{n}_residual" for n in SPLIT_STATES))
# what ``breathing`` and ``rr_reason`` hold (indices), as written into the package's metadata
BREATHING_CLASSES = ("none", "normal", "heavy", "unknown")
REASONS = ("rate", "no_breathing", "too_noisy", "warming_up")
assert REASONS.index("no_breathing") == periodicity.NO_BREATHING
assert REASONS.index("too_noisy") == periodicity.TOO_NOISY
assert REASONS.index("warming_up") == periodicity.WARMING_UP

CHUNK_MULTIPLE_SAMPLES = 800  # 50 ms: a whole number of front-end hops (160) and of DSP hops (400)


def check_chunk_samples(chunk_samples: int, cfg: FrontEndConfig = DEFAULT_FRONTEND) -> None:
    multiple = math.lcm(cfg.hop_length, round(DSP_CONFIG.hop_s * cfg.sample_rate))
    if chunk_samples <= 0 or chunk_samples % multiple:
        raise ValueError(
            f"chunk_samples must be a positive multiple of {multiple} samples "
            f"({1000 * multiple / cfg.sample_rate:g} ms: the front-end's and the DSP's hops), "
            f"not {chunk_samples}"
        )


class Geometry:
    """Sizes of the rolling window for a chunk length and window length, in one place."""

    def __init__(
        self, model: RRModel, chunk_samples: int, window_s: float, cfg: FrontEndConfig = DEFAULT_FRONTEND
    ) -> None:
        check_chunk_samples(chunk_samples, cfg)
        rate = cfg.sample_rate
        self.chunk_samples = chunk_samples
        self.chunk_s = chunk_samples / rate
        self.window_s = window_s
        self.steps_per_chunk = chunk_samples // cfg.hop_length // model.frame_stride
        self.window_steps = round(window_s * model.steps_per_second)
        self.dsp_hop = round(DSP_CONFIG.hop_s * rate)
        self.dsp_frame = round(DSP_CONFIG.frame_s * rate)
        self.frames_per_chunk = chunk_samples // self.dsp_hop
        # frames ending inside a window of window_s: the band ring holds exactly those
        self.window_frames = (round(window_s * rate) - self.dsp_frame) // self.dsp_hop + 1
        # audio kept in front of a chunk so that its frames start on the recording's grid
        self.dsp_tail = (-self.dsp_frame) % self.dsp_hop + self.dsp_frame - self.dsp_hop
        self.warmup_chunks = math.ceil(MIN_DURATION_S / self.chunk_s - 1e-9)
        # the counter stops once everything it gates is full (so a float16 state holds it exactly)
        self.max_chunks = max(
            math.ceil(self.window_steps / self.steps_per_chunk),
            math.ceil((round(window_s * rate)) / chunk_samples) + 1,
            self.warmup_chunks,
        )
        self.tail_samples = cfg.win_length - cfg.hop_length


def state_shapes(
    model: RRModel,
    chunk_samples: int = 1600,
    window_s: float = DEFAULT_ESTIMATOR.window_s,
    cfg: FrontEndConfig = DEFAULT_FRONTEND,
) -> dict[str, tuple[int, ...]]:
    """Shape of each streaming state for a batch of one."""
    g = Geometry(model, chunk_samples, window_s, cfg)
    shapes = {
        "audio_tail": (1, g.tail_samples),
        "conv_context": (1, model.n_mels, model.conv_kernel - 1),
        "lstm_h": (1, model.units),
        "lstm_c": (1, model.units),
        "norm_mean": (1, model.n_mels),
        "norm_count": (1, 1),
        "dsp_tail": (1, g.dsp_tail),
        "phase_window": (1, 2, g.window_steps),
        "lstm_window": (1, model.units, g.window_steps),
        "band_window": (1, len(DSP_CONFIG.band_edges_hz) - 1, g.window_frames),
        "chunks_seen": (1, 1),
        "count_whole": (1, 1),
        "count_fraction": (1, 1),
    }
    shapes.update({f"{n}_residual": shapes[n] for n in SPLIT_STATES})
    return shapes


def _split(value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``value`` as (value rounded to fp16, the rest): their sum is ``value`` exactly in float32."""
    rounded = value.to(torch.float16).to(torch.float32)
    return rounded, value - rounded


def _push(ring: torch.Tensor, new: torch.Tensor, n: int) -> torch.Tensor:
    """Append ``new`` [1, C, n] at the end of ``ring`` [1, C, N], dropping the oldest ``n`` (a Python
    int from :class:`Geometry`, so the traced graph slices by a constant)."""
    return torch.cat([ring[:, :, n:], new], dim=2)


class _Step(nn.Module):
    """One chunk: (audio, states) -> (outputs, new states)."""

    def __init__(
        self,
        model: RRModel,
        chunk_samples: int = 1600,
        estimator: EstimatorConfig = DEFAULT_ESTIMATOR,
        cfg: FrontEndConfig = DEFAULT_FRONTEND,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.frontend = LogMel(cfg, method="dft")
        self.band_powers = periodicity.BandPowers(cfg.sample_rate)
        self.geometry = Geometry(model, chunk_samples, estimator.window_s, cfg)
        self.estimator = estimator

    def step(
        self, audio: torch.Tensor, states: dict[str, torch.Tensor]
    ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        g, model, est = self.geometry, self.model, self.estimator
        states = {**states, **{n: states[n] + states[f"{n}_residual"] for n in SPLIT_STATES}}
        # 1. the model's chunk
        buffer = torch.cat([states["audio_tail"], audio], dim=1)
        state = StreamState(
            states["conv_context"],
            states["lstm_h"].unsqueeze(0),
            states["lstm_c"].unsqueeze(0),
            torch.zeros_like(states["lstm_h"]),  # no pooled mean: the window below replaces it
            torch.zeros_like(states["chunks_seen"]),
            states["norm_mean"],
            states["norm_count"],
        )
        steps, new = model.chunk_steps(self.frontend(buffer), state)  # [1, steps, units]
        phase_probs = torch.softmax(model.phase_head(steps), dim=-1)
        # 2. the DSP's frames ending in this chunk
        dsp_buffer = torch.cat([states["dsp_tail"], audio], dim=1)
        log_power = torch.log(self.band_powers(dsp_buffer) + periodicity.LOG_POWER_EPS)
        # 3. the rolling window
        track = torch.stack(
            [phase_probs[..., 0] - phase_probs[..., 1], phase_probs[..., 0] + phase_probs[..., 1]], 1
        )
        phase_window = _push(states["phase_window"], track, g.steps_per_chunk)
        lstm_window = _push(states["lstm_window"], steps.transpose(1, 2), g.steps_per_chunk)
        band_window = _push(states["band_window"], log_power, g.frames_per_chunk)
        chunks = torch.clamp(states["chunks_seen"] + 1.0, max=float(g.max_chunks))  # [1, 1]
        chunks_flat = chunks[:, 0]
        valid_steps = torch.clamp(chunks_flat * g.steps_per_chunk, max=float(g.window_steps))
        valid_frames = torch.clamp(
            torch.floor((chunks_flat * g.chunk_samples - g.dsp_frame) / g.dsp_hop) + 1.0,
            min=0.0,
            max=float(g.window_frames),
        )
        ev = periodicity.evidence(
            phase_window[:, 0], phase_window[:, 1], valid_steps, band_window, valid_frames
        )
        setting = torch.ones_like(valid_steps)
        decision = periodicity.decide(
            ev,
            setting * est.learned_weight,
            setting > (0.5 if est.adaptive else 1.5),
            setting * est.min_activity,
            setting * est.min_confidence,
        )
        warming = chunks_flat < g.warmup_chunks
        reason = torch.where(
            warming, torch.full_like(decision.reason, periodicity.WARMING_UP), decision.reason
        )
        has_rate = reason == periodicity.RATE
        rr_bpm = torch.where(has_rate, decision.rr_bpm, torch.zeros_like(decision.rr_bpm))
        confidence = torch.where(warming, torch.zeros_like(decision.rr_confidence), decision.rr_confidence)
        breathing = torch.where(
            reason == periodicity.NO_BREATHING,
            torch.zeros_like(rr_bpm),
            torch.where(
                has_rate,
                torch.where(
                    rr_bpm >= HEAVY_THRESHOLD_BPM, torch.full_like(rr_bpm, 2.0), torch.ones_like(rr_bpm)
                ),
                torch.full_like(rr_bpm, 3.0),
            ),
        )
        mask = (
            torch.arange(g.window_steps, dtype=torch.float32)[None, :]
            >= (g.window_steps - valid_steps)[:, None]
        ).to(torch.float32)
        pooled = (lstm_window * mask[:, None, :]).sum(-1) / torch.clamp(valid_steps, min=1.0)[:, None]
        noise_prob = torch.softmax(model.noise_head(model.noise_embedding(pooled)), dim=-1)[:, 1]
        # breath cycles since reset: the rolling rate added up, whole cycles and a fraction kept apart
        # so that a float16 state counts exactly to 2048 cycles
        fraction = states["count_fraction"] + (rr_bpm * (g.chunk_s / 60.0))[:, None]
        carried = torch.floor(fraction)
        count_whole = states["count_whole"] + carried
        count_fraction = fraction - carried
        outputs = (
            rr_bpm,
            confidence,
            reason,
            breathing,
            noise_prob,
            (count_whole + count_fraction)[:, 0],
            phase_probs,
        )
        new_states = {
            "audio_tail": buffer[:, -g.tail_samples :],
            "conv_context": new.conv_context,
            "lstm_h": new.lstm_h.squeeze(0),
            "lstm_c": new.lstm_c.squeeze(0),
            "norm_mean": new.norm_mean,
            "norm_count": new.norm_count,
            "dsp_tail": dsp_buffer[:, -g.dsp_tail :],
            "phase_window": phase_window,
            "lstm_window": lstm_window,
            "band_window": band_window,
            "chunks_seen": chunks,
            "count_whole": count_whole,
            "count_fraction": count_fraction,
        }
        for name in SPLIT_STATES:
            new_states[name], new_states[f"{name}_residual"] = _split(new_states[name])
        return outputs, tuple(new_states[n] for n in STATE_NAMES)


class ExplicitStreamer(_Step):
    """Inputs: audio [1, chunk] and the ``*_in`` states (in :data:`STATE_NAMES` order); outputs: the
    results (:data:`OUTPUT_NAMES`) then the ``*_out`` states."""

    def forward(self, audio: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs, new_states = self.step(audio, dict(zip(STATE_NAMES, states, strict=True)))
        return (*outputs, *new_states)


class StatefulStreamer(_Step):
    """Input: audio [1, chunk]; the states are buffers that Core ML keeps between calls."""

    def __init__(
        self,
        model: RRModel,
        chunk_samples: int = 1600,
        estimator: EstimatorConfig = DEFAULT_ESTIMATOR,
        cfg: FrontEndConfig = DEFAULT_FRONTEND,
    ) -> None:
        super().__init__(model, chunk_samples, estimator, cfg)
        for name, shape in state_shapes(model, chunk_samples, estimator.window_s, cfg).items():
            self.register_buffer(name, torch.zeros(shape))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs, new_states = self.step(audio, {n: getattr(self, n) for n in STATE_NAMES})
        for name, value in zip(STATE_NAMES, new_states, strict=True):
            # slice assignment over every axis is the in-place form coremltools turns into a state write
            buffer = getattr(self, name)
            buffer[(slice(None),) * buffer.dim()] = value
        return outputs


def traced_streamer(
    model: RRModel, chunk_samples: int = 1600, estimator: EstimatorConfig = DEFAULT_ESTIMATOR
) -> torch.jit.ScriptModule:
    """:class:`ExplicitStreamer` traced with ``torch.jit.trace``: what the converter reads, and what
    torch-side streaming runs (the same ops as eager, without Python's dispatch of each)."""
    import warnings

    wrapper = ExplicitStreamer(model, chunk_samples, estimator).eval()
    shapes = state_shapes(model, chunk_samples, estimator.window_s)
    example = (torch.zeros(1, chunk_samples), *(torch.zeros(shapes[n]) for n in STATE_NAMES))
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer warns about every numpy-built constant, which is what those constants are for
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced: torch.jit.ScriptModule = torch.jit.trace(wrapper, example, check_trace=False)
    return traced


def zero_states(
    model: RRModel, chunk_samples: int = 1600, window_s: float = DEFAULT_ESTIMATOR.window_s
) -> dict[str, np.ndarray]:
    return {n: np.zeros(s, np.float32) for n, s in state_shapes(model, chunk_samples, window_s).items()}


@torch.no_grad()
def offline_reference(model: RRModel, audio: np.ndarray, cfg: FrontEndConfig = DEFAULT_FRONTEND) -> dict:
    """The model run offline on a whole recording with the streaming package's start convention:
    ``phase_probs`` [steps, 3] at every step."""
    out = model.eval()(torch.from_numpy(stream_log_mel(audio, cfg))[None])
    return {"phase_probs": torch.softmax(out.phase_logits, -1)[0].numpy()}
