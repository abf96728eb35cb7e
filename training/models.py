"""The paper's multi-task models: TC-LSTM (causal Conv1d -> LSTM) and the plain LSTM.

Shape of the network (Kumar, Mitra et al. 2021, Fig. 2):

    log-mel [B, T, 40] -> standardise -> (TC-LSTM only) causal Conv1d(40, 40, k=3) + ReLU
        -> LSTM(units) -> mean over time ------+--> breath embedding (units) -> RR, RC, breath class
                                                 +--> noise embedding (units / 4) -> noisy / clean

Optionally (ours, ``frame_stride`` > 1), the frames entering the LSTM are averaged in non-overlapping
groups of ``frame_stride`` (after the time convolution, or after standardisation for the LSTM model).
An LSTM over 600 frames at 100 frames/s must carry a slow breath (a cycle of 7.5 s at 8 breaths/min)
across hundreds of steps; at 20 steps/s it is five times fewer steps, and training is faster too.
``frame_stride=1`` is the paper's model exactly.

Two choices make the model stream exactly as it runs offline:
- the time convolution is causal (left context only), so a frame never needs the future;
- a stride group is complete inside a chunk whenever chunks are whole multiples of the stride (the
  Core ML chunk of 10 frames with a stride of 1, 2, 5 or 10), so no partial group needs a state;
  :meth:`RRModel.forward_chunk` refuses other chunk lengths rather than silently drifting;
- the sequence summary is the mean of the LSTM outputs, kept as a running mean and count, so the heads
  can be read after every chunk and give the answer for "all the audio since the last reset". (A mean
  rather than a sum keeps the state near 1 in magnitude, which survives Core ML's fp16 state storage.)

RR comes out standardised (``(rr - mean) / std`` of the training labels, undone by the caller that
holds the normalisation). RC is a count, which grows with the length of what was heard, so its head
predicts breaths per minute and multiplies by the elapsed minutes; a mean-pooled embedding alone
cannot know how long the segment was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from training.frontend import DEFAULT_FRONTEND, FrontEndConfig
from training.running_norm import DEFAULT_RUNNING_NORM, RunningNormConfig, normalise_chunk, normalise_sequence

if TYPE_CHECKING:
    from training.config import TrainConfig

NORMS = ("running", "global")
PHASES = ("inhale", "exhale", "other")  # frame-level classes of the phase head ("other": pause, none)


class StreamState(NamedTuple):
    """Everything a chunk forward needs from the previous chunk; zeros mean "reset"."""

    conv_context: torch.Tensor  # [B, n_mels, kernel - 1] last standardised frames (unused by LSTM)
    lstm_h: torch.Tensor  # [1, B, units]
    lstm_c: torch.Tensor  # [1, B, units]
    pool_mean: torch.Tensor  # [B, units] mean of the LSTM outputs since reset
    pool_count: torch.Tensor  # [B, 1] LSTM steps (stride groups) since reset
    norm_mean: torch.Tensor  # [B, n_mels] running mean of each band (see training.running_norm)
    norm_count: torch.Tensor  # [B, 1] frames since reset


class ModelOutputs(NamedTuple):
    rr_z: torch.Tensor  # [B] standardised RR
    rc: torch.Tensor  # [B] respiration count (breath cycles)
    breath_logits: torch.Tensor  # [B, 3] none, normal, heavy
    noise_logits: torch.Tensor  # [B, 2] clean, noisy
    phase_logits: torch.Tensor  # [B, steps, 3] inhale, exhale, other at each LSTM step (this call's steps)


class RRModel(nn.Module):
    # buffers (register_buffer below), declared so they type as tensors, not as "Tensor | Module"
    feat_mean: torch.Tensor
    feat_std: torch.Tensor
    rr_mean: torch.Tensor
    rr_std: torch.Tensor
    stride_kernel: torch.Tensor

    def __init__(
        self,
        model_type: str = "tclstm",
        units: int = 32,
        n_mels: int = DEFAULT_FRONTEND.n_mels,
        conv_kernel: int = 3,
        frames_per_second: float = DEFAULT_FRONTEND.frames_per_second,
        frame_stride: int = 1,
        norm: str = "global",
        running_norm: RunningNormConfig = DEFAULT_RUNNING_NORM,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
        if model_type not in ("tclstm", "lstm"):
            raise ValueError(f"model_type must be 'tclstm' or 'lstm', not {model_type!r}")
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be at least 1, not {frame_stride}")
        self.model_type = model_type
        self.norm = norm
        self.running_norm = running_norm
        self.norm_alpha = running_norm.alpha(frames_per_second)
        self.frames_per_second = frames_per_second
        self.frame_stride = frame_stride
        self.units = units
        self.n_mels = n_mels
        self.conv_kernel = conv_kernel
        self.steps_per_minute = 60.0 * frames_per_second / frame_stride  # LSTM steps per minute
        # Feature standardisation, set from the training data (see set_feature_stats).
        self.register_buffer("feat_mean", torch.zeros(n_mels))
        self.register_buffer("feat_std", torch.ones(n_mels))
        # Label normalisation of RR and of RC's per-minute rate (see set_label_stats).
        self.register_buffer("rr_mean", torch.tensor(15.0))
        self.register_buffer("rr_std", torch.tensor(5.0))
        # fixed averaging weights of the frame stride, not learned and not saved (rebuilt from the stride)
        kernel = torch.full((n_mels, 1, frame_stride), 1.0 / frame_stride)
        self.register_buffer("stride_kernel", kernel, persistent=False)
        self.conv = nn.Conv1d(n_mels, n_mels, conv_kernel) if model_type == "tclstm" else None
        self.lstm = nn.LSTM(n_mels, units, batch_first=True)
        self.breath_embedding = nn.Sequential(nn.Linear(units, units), nn.ReLU())
        self.rr_head = nn.Linear(units, 1)
        self.rc_rate_head = nn.Linear(units, 1)
        self.breath_head = nn.Linear(units, 3)
        noise_units = max(1, units // 4)
        self.noise_embedding = nn.Sequential(nn.Linear(units, noise_units), nn.ReLU())
        self.noise_head = nn.Linear(noise_units, 2)
        # ours: what is happening at each LSTM step (inhale / exhale / other), read by the estimator
        self.phase_head = nn.Linear(units, len(PHASES))

    @classmethod
    def from_config(cls, cfg: TrainConfig, frontend: FrontEndConfig = DEFAULT_FRONTEND) -> RRModel:
        """The model a :class:`training.config.TrainConfig` describes, for ``frontend``'s features."""
        return cls(
            cfg.model_type,
            cfg.units,
            frontend.n_mels,
            cfg.conv_kernel,
            frontend.frames_per_second,
            cfg.frame_stride,
            cfg.norm,
            RunningNormConfig(cfg.norm_time_constant_s),
        )

    @property
    def steps_per_second(self) -> float:
        return self.frames_per_second / self.frame_stride

    # -- normalisation ------------------------------------------------------------------------------
    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std.clamp_min(1e-3))

    def set_label_stats(self, rr_mean: float, rr_std: float) -> None:
        self.rr_mean.fill_(rr_mean)
        self.rr_std.fill_(max(rr_std, 1e-3))

    def rr_to_bpm(self, rr_z: torch.Tensor) -> torch.Tensor:
        return rr_z * self.rr_std + self.rr_mean

    # -- shared pieces -------------------------------------------------------------------------------
    def _normalise(
        self, features: torch.Tensor, mean: torch.Tensor, count: torch.Tensor, chunk: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised features and the running-norm state after them.

        The running statistics are kept in every model (so streaming states are the same for all);
        only ``norm="running"`` models use them, ``"global"`` ones (the paper's) standardise with the
        training corpus's statistics instead.
        """
        run = normalise_chunk if chunk else normalise_sequence
        y, mean, count = run(features, mean, count, self.norm_alpha, self.running_norm)
        if self.norm == "global":
            y = (features - self.feat_mean) / self.feat_std
        return y, mean, count

    def _heads(self, pooled: torch.Tensor, count: torch.Tensor, steps: torch.Tensor) -> ModelOutputs:
        """Heads on the mean LSTM output; ``count`` [B, 1] is the number of LSTM steps it averages;
        ``steps`` [B, t, units] are the LSTM outputs the phase head reads."""
        breath = self.breath_embedding(pooled)
        rr_z = self.rr_head(breath).squeeze(-1)
        # breaths/min (through the same normalisation as RR) times the minutes heard
        rc_rate = torch.relu(self.rc_rate_head(breath).squeeze(-1) * self.rr_std + self.rr_mean)
        rc = rc_rate * count.squeeze(-1) / self.steps_per_minute
        noise = self.noise_embedding(pooled)
        return ModelOutputs(
            rr_z, rc, self.breath_head(breath), self.noise_head(noise), self.phase_head(steps)
        )

    def initial_state(self, batch: int = 1, device: torch.device | None = None) -> StreamState:
        zeros = lambda *shape: torch.zeros(*shape, device=device)  # noqa: E731
        return StreamState(
            conv_context=zeros(batch, self.n_mels, self.conv_kernel - 1),
            lstm_h=zeros(1, batch, self.units),
            lstm_c=zeros(1, batch, self.units),
            pool_mean=zeros(batch, self.units),
            pool_count=zeros(batch, 1),
            norm_mean=zeros(batch, self.n_mels),
            norm_count=zeros(batch, 1),
        )

    def _stride_pool(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> [B, T // stride, F]: mean of each whole group of ``frame_stride`` frames."""
        if self.frame_stride == 1:
            return x
        # a depthwise strided convolution with weights 1/stride: it drops a trailing partial group,
        # traces without shape arithmetic, and uses an op every Core ML runtime (and our interpreter) has
        pooled = nn.functional.conv1d(
            x.transpose(1, 2), self.stride_kernel, stride=self.frame_stride, groups=x.shape[2]
        )
        return pooled.transpose(1, 2)

    # -- whole sequences -----------------------------------------------------------------------------
    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> ModelOutputs:
        """features [B, T, n_mels] (padded at the end), lengths [B] valid frames (all T if None).

        Padding sits after the valid frames and every layer is causal, so valid outputs never see
        padding; the mean pool masks it out. With a frame stride, a trailing partial group of frames
        is not used (streaming would still be waiting for the rest of it).
        """
        batch, frames, _ = features.shape
        zeros = features.new_zeros
        x, _, _ = self._normalise(features, zeros(batch, self.n_mels), zeros(batch, 1), chunk=False)
        if self.conv is not None:
            x = x.transpose(1, 2)
            x = nn.functional.pad(x, (self.conv_kernel - 1, 0))  # causal: zeros = reset state
            x = torch.relu(self.conv(x)).transpose(1, 2)
        x = self._stride_pool(x)
        out, _ = self.lstm(x)
        steps = out.shape[1]
        if lengths is None:
            lengths = torch.full((batch,), frames, device=features.device)
        lengths = torch.div(lengths, self.frame_stride, rounding_mode="floor")
        mask = (torch.arange(steps, device=features.device)[None, :] < lengths[:, None]).to(out.dtype)
        count = mask.sum(dim=1, keepdim=True)
        pooled = (out * mask.unsqueeze(-1)).sum(dim=1) / count.clamp_min(1.0)
        return self._heads(pooled, count, out)

    # -- streaming -----------------------------------------------------------------------------------
    def forward_chunk(self, features: torch.Tensor, state: StreamState) -> tuple[ModelOutputs, StreamState]:
        """Process the next frames [B, t, n_mels] (t >= 1, a multiple of ``frame_stride``) given the
        state after the previous ones.

        Returns the outputs for everything since the last reset and the new state. Feeding a
        sequence in any such chunking gives the outputs of :meth:`forward` on the whole sequence.
        """
        out, state = self.chunk_steps(features, state)
        # frames in this chunk as a tensor op (not a Python int), so tracing keeps no shape arithmetic
        pool_count = state.pool_count + torch.ones_like(out[:, :, :1]).sum(dim=1)
        pool_mean = (state.pool_mean * state.pool_count + out.sum(dim=1)) / pool_count
        outputs = self._heads(pool_mean, pool_count, out)
        return outputs, state._replace(pool_mean=pool_mean, pool_count=pool_count)

    def chunk_steps(self, features: torch.Tensor, state: StreamState) -> tuple[torch.Tensor, StreamState]:
        """The LSTM outputs [B, t / frame_stride, units] of the next frames [B, t, n_mels] and the state
        after them (the pooled mean and its count passed through unchanged): what the streaming
        package needs, which keeps its own rolling window instead of a mean since reset."""
        if features.shape[1] % self.frame_stride:
            raise ValueError(
                f"a chunk of {features.shape[1]} frames is not a multiple of the frame stride "
                f"({self.frame_stride}); stride groups must not straddle chunks"
            )
        x, norm_mean, norm_count = self._normalise(features, state.norm_mean, state.norm_count, chunk=True)
        conv_context = state.conv_context
        if self.conv is not None:
            xt = torch.cat([conv_context, x.transpose(1, 2)], dim=2)
            conv_context = xt[:, :, -(self.conv_kernel - 1) :]
            x = torch.relu(self.conv(xt)).transpose(1, 2)
        x = self._stride_pool(x)
        out, (h, c) = self.lstm(x, (state.lstm_h, state.lstm_c))
        return out, StreamState(conv_context, h, c, state.pool_mean, state.pool_count, norm_mean, norm_count)

    def describe(self) -> dict:
        return {
            "model_type": self.model_type,
            "units": self.units,
            "n_mels": self.n_mels,
            "conv_kernel": self.conv_kernel,
            "frame_stride": self.frame_stride,
            "norm": self.norm,
            "norm_time_constant_s": self.running_norm.time_constant_s,
            "parameters": sum(p.numel() for p in self.parameters()),
        }
