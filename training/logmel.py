"""The front-end's log-mel features computed with torch (the definition is :mod:`training.frontend`).

:class:`LogMel` is the module (``method="fft"`` offline, ``method="dft"`` traced into Core ML),
:func:`log_mel` the whole-signal numpy call, :class:`StreamingLogMel` the same frames chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from training.framed_dft import FramedPowerSpectrum
from training.frontend import DEFAULT_FRONTEND, FrontEndConfig, hann_window, mel_matrix


class LogMel(nn.Module):
    """Audio [batch, samples] (float32, 16 kHz) -> log-mel features [batch, frames, n_mels]."""

    mel: torch.Tensor  # buffers, declared so they type as tensors
    window: torch.Tensor

    def __init__(self, cfg: FrontEndConfig = DEFAULT_FRONTEND, method: str = "fft") -> None:
        super().__init__()
        if method not in ("fft", "dft"):
            raise ValueError(f"method must be 'fft' or 'dft', not {method!r}")
        self.cfg = cfg
        self.method = method
        self.n_bins = cfg.n_fft // 2 + 1
        self.register_buffer("mel", torch.from_numpy(mel_matrix(cfg)).T.contiguous(), persistent=False)
        self.register_buffer("window", torch.from_numpy(hann_window(cfg)), persistent=False)
        if method == "dft":  # the DFT as matrix products (the package's form: no FFT op for iOS 16)
            self.dft = FramedPowerSpectrum(cfg.n_fft, cfg.hop_length, hann_window(cfg), self.n_bins)

    def power_spectrum(self, audio: torch.Tensor) -> torch.Tensor:
        """[batch, samples] -> |DFT|^2 [batch, frames, n_bins]."""
        cfg = self.cfg
        if self.method == "dft":
            return self.dft(audio)
        frames = audio.unfold(-1, cfg.n_fft, cfg.hop_length) * self.window
        spec = torch.fft.rfft(frames, n=cfg.n_fft)
        return spec.real.square() + spec.imag.square()

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.shape[-1] < self.cfg.win_length:
            return audio.new_zeros((*audio.shape[:-1], 0, self.cfg.n_mels))
        energy = torch.matmul(self.power_spectrum(audio), self.mel)
        return torch.log(energy + self.cfg.log_floor)


_DEFAULT_LOGMEL: LogMel | None = None


def log_mel(audio: np.ndarray, cfg: FrontEndConfig = DEFAULT_FRONTEND) -> np.ndarray:
    """Whole-signal features of one mono 16 kHz signal: [frames, n_mels] float32 (numpy in, numpy out)."""
    global _DEFAULT_LOGMEL
    if cfg == DEFAULT_FRONTEND:
        if _DEFAULT_LOGMEL is None:
            _DEFAULT_LOGMEL = LogMel(cfg)
        module = _DEFAULT_LOGMEL
    else:
        module = LogMel(cfg)
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
        return module(x)[0].numpy()


def stream_log_mel(
    audio: np.ndarray, cfg: FrontEndConfig = DEFAULT_FRONTEND, method: str = "fft"
) -> np.ndarray:
    """Features framed as a stream from a reset frames them: ``win_length - hop_length`` zeros in
    front (the zero audio tail of the Core ML package), so frame ``i`` ends at sample ``(i + 1) * hop``
    and every chunk of whole hops yields ``chunk / hop`` frames. The estimator's phase track uses this
    framing (and ``method="dft"``, the package's arithmetic), so its rolling rate and the package's are
    computed from the same frames."""
    pad = np.zeros(cfg.win_length - cfg.hop_length, np.float32)
    padded = np.concatenate([pad, np.asarray(audio, dtype=np.float32)])
    if method == "fft":
        return log_mel(padded, cfg)
    with torch.no_grad():  # the package's DFT as matrix products (equal to float32 round-off)
        return LogMel(cfg, method=method)(torch.from_numpy(padded)[None])[0].numpy()


class StreamingLogMel:
    """Feeds audio in chunks of any size; yields exactly the frames of the whole-signal call.

    It keeps the samples that the next frame still needs (at most ``win_length - hop_length`` plus
    whatever did not fill a hop), so memory stays bounded however long the stream runs.
    """

    def __init__(self, cfg: FrontEndConfig = DEFAULT_FRONTEND, method: str = "fft") -> None:
        self.cfg = cfg
        self.module = LogMel(cfg, method=method)
        self.reset()

    def reset(self) -> None:
        self._tail = np.zeros(0, dtype=np.float32)

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Append ``chunk``; return the newly complete frames [k, n_mels] (k may be 0)."""
        cfg = self.cfg
        buffer = np.concatenate([self._tail, np.asarray(chunk, dtype=np.float32).reshape(-1)])
        n_frames = cfg.num_frames(len(buffer))
        if n_frames == 0:
            self._tail = buffer
            return np.zeros((0, cfg.n_mels), dtype=np.float32)
        with torch.no_grad():
            used = (n_frames - 1) * cfg.hop_length + cfg.win_length
            frames = self.module(torch.from_numpy(buffer[:used])[None])[0].numpy()
        self._tail = buffer[n_frames * cfg.hop_length :]
        return frames

    def stream(self, chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for chunk in chunks:
            frames = self.push(chunk)
            if len(frames):
                yield frames
