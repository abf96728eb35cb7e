"""Streaming feature normalisation: each log-mel band minus its own running mean.

Why: a microphone's gain, the distance to the mouth and a device's automatic gain control shift every
log-mel energy by a constant. Standardising with the training corpus's global mean and deviation (the
paper's choice) ties the model to the levels and microphones of that corpus. Subtracting a running
mean per band removes any constant gain exactly, leaves steady background noise near zero, and keeps
what breathing adds: bursts that rise above the band's recent level. It needs only the past, so it
streams, and its state is one mean per band and a frame count.

The rule, frame by frame (``n`` counts frames since reset, starting at 1)::

    a_n = max(1 / n, alpha)          # a plain mean while warming up, then an exponential one
    m_n = m_{n-1} + a_n (x_n - m_{n-1})
    y_n = clip((x_n - m_n) / scale, -clip, +clip)

``alpha = 1 / (time_constant_s * frames_per_second)``. Two implementations compute the same numbers:
:func:`normalise_chunk` frame by frame (a handful of elementwise ops per frame, what the Core ML graph
runs on a 10-frame chunk) and :func:`normalise_sequence` in blocks with cumulative sums (what training
and offline estimation run on minutes of frames). Tests hold them equal.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class RunningNormConfig:
    time_constant_s: float = 4.0  # the running mean forgets with this time constant
    scale: float = 2.5  # log-energy units per output unit (2.5 nepers is about 11 dB)
    clip: float = 4.0  # outputs are clipped to +-clip (a door slam must not saturate the LSTM)

    def alpha(self, frames_per_second: float) -> float:
        return 1.0 / (self.time_constant_s * frames_per_second)


DEFAULT_RUNNING_NORM = RunningNormConfig()

_BLOCK = 4096  # frames per block of the cumulative-sum form: (1 - alpha)^-4096 stays small in float64


def normalise_sequence(
    x: torch.Tensor, mean: torch.Tensor, count: torch.Tensor, alpha: float, cfg: RunningNormConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalise frames ``x`` [B, T, F] given the state ``mean`` [B, F], ``count`` [B, 1].

    Returns ``(y, new_mean, new_count)``. Equal to :func:`normalise_chunk` (to float32 round-off).
    """
    _, frames, bands = x.shape
    xd = x.to(torch.float64)
    m = mean.to(torch.float64)
    n0 = count.to(torch.float64)  # [B, 1]
    out = []
    decay = 1.0 - alpha
    for start in range(0, frames, _BLOCK):
        block = xd[:, start : start + _BLOCK]
        length = block.shape[1]
        n = n0 + torch.arange(1, length + 1, dtype=torch.float64)[None, :]  # [B, L] frame numbers
        # Warm-up (a_n = 1/n): the mean of everything so far is (n0 * m + cumsum(x)) / n.
        warm = (n0[:, :, None] * m[:, None, :] + torch.cumsum(block, dim=1)) / n[:, :, None]
        # Exponential (a_n = alpha) from each row's warm-up end on: a scaled cumulative sum.
        switch = torch.clamp(torch.floor(torch.tensor(1.0 / alpha, dtype=torch.float64)) - n0, min=0.0)
        k = torch.arange(1, length + 1, dtype=torch.float64)[None, :]  # [1, L]
        after = k > switch  # [B, L]: frames using alpha
        # value at the last warm-up frame (or the incoming mean when there is none in this block)
        idx = torch.clamp(switch.long() - 1, min=-1, max=length - 1)  # [B, 1]
        base = torch.where(
            idx[:, :, None] >= 0,
            torch.gather(warm, 1, torch.clamp(idx, min=0)[:, :, None].expand(-1, 1, bands)),
            m[:, None, :],
        )  # [B, 1, F]
        steps = torch.clamp(k - switch, min=0.0)  # exponential steps taken at each frame
        weights = torch.where(after, decay ** (-steps), torch.zeros_like(steps))  # [B, L]
        acc = torch.cumsum(weights[:, :, None] * block, dim=1)
        ema = decay ** steps[:, :, None] * (base + alpha * acc)
        block_mean = torch.where(after[:, :, None], ema, warm)
        out.append(block - block_mean)
        m = block_mean[:, -1]
        n0 = n0 + length
    y = torch.cat(out, dim=1) if out else xd
    y = torch.clamp(y / cfg.scale, -cfg.clip, cfg.clip).to(x.dtype)
    return y, m.to(mean.dtype), n0.to(count.dtype)


def normalise_chunk(
    x: torch.Tensor, mean: torch.Tensor, count: torch.Tensor, alpha: float, cfg: RunningNormConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same rule frame by frame, unrolled over the chunk's frames (the form traced into Core ML).

    Only the mean is sequential; the outputs are computed once for the chunk from the stacked means
    (the same arithmetic per element, with fewer ops per call in torch and in the package)."""
    means = []
    for i in range(x.shape[1]):
        count = count + 1.0
        rate = torch.clamp(1.0 / count, min=alpha)
        mean = mean + rate * (x[:, i] - mean)
        means.append(mean)
    y = torch.clamp((x - torch.stack(means, dim=1)) / cfg.scale, -cfg.clip, cfg.clip)
    return y, mean, count
