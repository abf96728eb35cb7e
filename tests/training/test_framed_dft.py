"""The two-stage DFT the package runs (training.framed_dft) equals a float64 FFT of the same frames."""

import numpy as np
import pytest
import torch

from training.framed_dft import FramedPowerSpectrum


def _reference(audio: np.ndarray, frame: int, hop: int, window: np.ndarray, n_bins: int) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(audio.astype(np.float64), frame)[::hop]
    spectrum = np.fft.rfft(frames * window, axis=1)[:, :n_bins]
    return spectrum.real**2 + spectrum.imag**2


@pytest.mark.parametrize(
    ("frame", "hop", "n_bins"),
    [
        (1024, 400, 410),  # the DSP's frames at 16 kHz: blocks of 16, bins up to 6.4 kHz
        (400, 160, 201),  # the front-end's: blocks of 80, every bin
        (12, 5, 7),  # frame and hop share no factor: one block of one sample per frame sample
        (64, 64, 33),  # no overlap
    ],
)
def test_power_spectrum_of_every_frame_equals_a_float64_fft(frame, hop, n_bins):
    rng = np.random.default_rng(frame + hop)
    audio = (0.1 * rng.standard_normal(5 * frame + 3 * hop + 7)).astype(np.float32)
    audio[: len(audio) // 3] *= 1e-3  # a quiet part: relative accuracy, not only absolute
    window = np.hanning(frame)
    got = FramedPowerSpectrum(frame, hop, window, n_bins)(torch.from_numpy(audio)[None, :].repeat(2, 1))
    expected = _reference(audio, frame, hop, window, n_bins)
    assert got.shape == (2, *expected.shape)
    scale = expected.max(axis=1, keepdims=True)  # per frame: float32 sums are exact to ~1e-7 of the peak
    np.testing.assert_allclose(got[1].numpy() / scale, expected / scale, rtol=0, atol=2e-6)
    assert torch.equal(got[0], got[1])


def test_window_and_bin_count_are_checked():
    with pytest.raises(ValueError, match="window"):
        FramedPowerSpectrum(16, 4, np.hanning(15), 9)
    with pytest.raises(ValueError, match="n_bins"):
        FramedPowerSpectrum(16, 4, np.hanning(16), 10)
