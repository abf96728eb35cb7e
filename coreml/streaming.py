"""The torch modules that are traced into the ``.mlpackage``: front-end + model, one chunk per call.

The app hands the package one chunk of 16 kHz mono audio (default 1600 samples = 100 ms) per call.
Inside the graph: the audio tail kept from the previous call is put in front of the chunk, framed
and transformed by the front-end's DFT-as-convolution form (:class:`training.logmel.LogMel` with
``method="dft"``), and the new frames go through the model's chunk forward. The outputs describe all
audio since the last reset (zero states).

The chunk must be a whole number of hops (160 samples), so every call yields the same number of
frames: ``chunk / 160``. The tail is the last ``win - hop = 240`` samples. After a reset the tail is
zeros, i.e. the stream is treated as if 15 ms of silence preceded it; :func:`offline_reference`
applies the same convention, which is what ``verify`` compares against.

Two variants share this code:
- :class:`ExplicitStreamer`: states are inputs ``*_in`` and outputs ``*_out`` in float32 (iOS 16+).
- :class:`StatefulStreamer`: states are buffers updated in place, converted to Core ML states (iOS 18+).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.frontend import DEFAULT_FRONTEND, FrontEndConfig
from training.logmel import LogMel
from training.models import RRModel, StreamState

OUTPUT_NAMES = ("rr_bpm", "respiration_count", "breath_probs", "noise_prob", "phase_probs")
STATE_NAMES = (
    "audio_tail",
    "conv_context",
    "lstm_h",
    "lstm_c",
    "pool_mean",
    "pool_count",
    "norm_mean",
    "norm_count",
)


def state_shapes(model: RRModel, cfg: FrontEndConfig = DEFAULT_FRONTEND) -> dict[str, tuple[int, ...]]:
    """Shape of each streaming state for a batch of one."""
    return {
        "audio_tail": (1, cfg.win_length - cfg.hop_length),
        "conv_context": (1, model.n_mels, model.conv_kernel - 1),
        "lstm_h": (1, model.units),
        "lstm_c": (1, model.units),
        "pool_mean": (1, model.units),
        "pool_count": (1, 1),
        "norm_mean": (1, model.n_mels),
        "norm_count": (1, 1),
    }


def check_chunk_samples(chunk_samples: int, cfg: FrontEndConfig = DEFAULT_FRONTEND) -> None:
    if chunk_samples <= 0 or chunk_samples % cfg.hop_length:
        raise ValueError(
            f"chunk_samples must be a positive multiple of the hop ({cfg.hop_length} samples), "
            f"not {chunk_samples}"
        )


class _Step(nn.Module):
    """One chunk: (audio, states) -> (outputs, new states)."""

    def __init__(self, model: RRModel, cfg: FrontEndConfig = DEFAULT_FRONTEND) -> None:
        super().__init__()
        self.model = model.eval()
        self.frontend = LogMel(cfg, method="dft")
        self.tail_samples = cfg.win_length - cfg.hop_length

    def step(
        self, audio, audio_tail, conv_context, lstm_h, lstm_c, pool_mean, pool_count, norm_mean, norm_count
    ):
        buffer = torch.cat([audio_tail, audio], dim=1)
        features = self.frontend(buffer)
        state = StreamState(
            conv_context,
            lstm_h.unsqueeze(0),
            lstm_c.unsqueeze(0),
            pool_mean,
            pool_count,
            norm_mean,
            norm_count,
        )
        out, new = self.model.forward_chunk(features, state)
        outputs = (
            self.model.rr_to_bpm(out.rr_z),
            out.rc,
            torch.softmax(out.breath_logits, dim=-1),
            torch.softmax(out.noise_logits, dim=-1)[:, 1],
            # the chunk's frame-level breath output: P(inhale), P(exhale), P(other) at each LSTM step
            torch.softmax(out.phase_logits, dim=-1),
        )
        new_states = (
            buffer[:, -self.tail_samples :],
            new.conv_context,
            new.lstm_h.squeeze(0),
            new.lstm_c.squeeze(0),
            new.pool_mean,
            new.pool_count,
            new.norm_mean,
            new.norm_count,
        )
        return outputs, new_states


class ExplicitStreamer(_Step):
    """Inputs: audio [1, chunk] and the ``*_in`` states; outputs: the results then ``*_out``."""

    def forward(
        self,
        audio,
        audio_tail_in,
        conv_context_in,
        lstm_h_in,
        lstm_c_in,
        pool_mean_in,
        pool_count_in,
        norm_mean_in,
        norm_count_in,
    ):
        outputs, states = self.step(
            audio,
            audio_tail_in,
            conv_context_in,
            lstm_h_in,
            lstm_c_in,
            pool_mean_in,
            pool_count_in,
            norm_mean_in,
            norm_count_in,
        )
        return (*outputs, *states)


class StatefulStreamer(_Step):
    """Input: audio [1, chunk]; the states are buffers that Core ML keeps between calls."""

    def __init__(self, model: RRModel, cfg: FrontEndConfig = DEFAULT_FRONTEND) -> None:
        super().__init__(model, cfg)
        for name, shape in state_shapes(model, cfg).items():
            self.register_buffer(name, torch.zeros(shape))

    def forward(self, audio):
        outputs, states = self.step(
            audio,
            self.audio_tail,
            self.conv_context,
            self.lstm_h,
            self.lstm_c,
            self.pool_mean,
            self.pool_count,
            self.norm_mean,
            self.norm_count,
        )
        # slice assignment is the in-place form coremltools turns into a state write
        self.audio_tail[:, :] = states[0]
        self.conv_context[:, :, :] = states[1]
        self.lstm_h[:, :] = states[2]
        self.lstm_c[:, :] = states[3]
        self.pool_mean[:, :] = states[4]
        self.pool_count[:, :] = states[5]
        self.norm_mean[:, :] = states[6]
        self.norm_count[:, :] = states[7]
        return outputs


@torch.no_grad()
def offline_reference(model: RRModel, audio: np.ndarray, cfg: FrontEndConfig = DEFAULT_FRONTEND) -> dict:
    """The model run offline on a whole window, with the streaming package's start convention."""
    padded = np.concatenate([np.zeros(cfg.win_length - cfg.hop_length, np.float32), audio.astype(np.float32)])
    features = LogMel(cfg)(torch.from_numpy(padded)[None])
    out = model.eval()(features)
    return {
        "rr_bpm": float(model.rr_to_bpm(out.rr_z)[0]),
        "respiration_count": float(out.rc[0]),
        "breath_probs": torch.softmax(out.breath_logits, -1)[0].numpy(),
        "noise_prob": float(torch.softmax(out.noise_logits, -1)[0, 1]),
        "phase_probs": torch.softmax(out.phase_logits, -1)[0].numpy(),  # [steps, 3], every step
    }
