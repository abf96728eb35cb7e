"""The front-end equals librosa's log-mel, in both implementations, and streams frame-exactly."""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np
import pytest
import scipy.signal
import torch

from training.frontend import (
    DEFAULT_FRONTEND,
    LOG_FLOOR,
    FrontEndConfig,
    FrontEndMismatchError,
    check_frontend,
    mel_frequencies,
    mel_matrix,
)
from training.logmel import LogMel, StreamingLogMel, log_mel

RATE = 16_000


def speech_like(rng: np.random.Generator, duration_s: float = 3.0) -> np.ndarray:
    """Voiced syllables: a gliding harmonic source (f0 100-220 Hz) through two formants, with pauses."""
    n = int(duration_s * RATE)
    t = np.arange(n) / RATE
    f0 = 150 + 60 * np.sin(2 * np.pi * 0.7 * t) + 10 * rng.standard_normal(n).cumsum() / np.sqrt(n)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    source = sum(np.sin(k * phase) / k for k in range(1, 30))
    b1, a1 = scipy.signal.butter(2, [500, 900], btype="bandpass", fs=RATE)
    b2, a2 = scipy.signal.butter(2, [1400, 2400], btype="bandpass", fs=RATE)
    voiced = scipy.signal.lfilter(b1, a1, source) + 0.5 * scipy.signal.lfilter(b2, a2, source)
    syllables = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) ** 2
    fricative = 0.02 * rng.standard_normal(n) * (syllables < 0.05)
    x = voiced * syllables + fricative
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def breath_like(rng: np.random.Generator, duration_s: float = 6.0, rr_bpm: float = 18.0) -> np.ndarray:
    """Band-limited noise bursts (inhale 200-2000 Hz, softer exhale 100-1200 Hz) with quiet gaps."""
    n = int(duration_s * RATE)
    t = np.arange(n) / RATE
    cycle = (t * rr_bpm / 60.0) % 1.0
    inhale = np.where(cycle < 0.35, np.sin(np.pi * cycle / 0.35) ** 2, 0.0)
    exhale = np.where((cycle > 0.4) & (cycle < 0.85), 0.6 * np.sin(np.pi * (cycle - 0.4) / 0.45) ** 2, 0.0)
    b_in, a_in = scipy.signal.butter(4, [200, 2000], btype="bandpass", fs=RATE)
    b_ex, a_ex = scipy.signal.butter(4, [100, 1200], btype="bandpass", fs=RATE)
    x = scipy.signal.lfilter(b_in, a_in, rng.standard_normal(n)) * inhale
    x += scipy.signal.lfilter(b_ex, a_ex, rng.standard_normal(n)) * exhale
    x += 1e-4 * rng.standard_normal(n)  # microphone self-noise in the gaps
    return (0.2 * x / np.max(np.abs(x))).astype(np.float32)


def near_silent(rng: np.random.Generator, level: float, duration_s: float = 2.0) -> np.ndarray:
    return (level * rng.standard_normal(int(duration_s * RATE))).astype(np.float32)


SIGNALS = {
    "speech": lambda rng: speech_like(rng),
    "breath": lambda rng: breath_like(rng),
    "breath_heavy": lambda rng: breath_like(rng, duration_s=4.0, rr_bpm=45.0),
    "near_silent_1e-3": lambda rng: near_silent(rng, 1e-3),
    "near_silent_1e-4": lambda rng: near_silent(rng, 1e-4),
    "digital_silence": lambda rng: np.zeros(RATE, np.float32),
}


def librosa_log_mel(x: np.ndarray) -> np.ndarray:
    """The reference: librosa with the parameters the issue fixes, computed in float64. [frames, n_mels]."""
    mel = librosa.feature.melspectrogram(
        y=x.astype(np.float64),
        sr=RATE,
        n_fft=400,
        win_length=400,
        hop_length=160,
        window="hann",
        center=False,
        power=2.0,
        n_mels=40,
        fmin=0.0,
        fmax=7500.0,
    )
    return np.log(mel + 1e-6).T


@pytest.mark.parametrize("method", ["fft", "dft"])
@pytest.mark.parametrize("signal", sorted(SIGNALS))
def test_matches_librosa(method: str, signal: str) -> None:
    x = SIGNALS[signal](np.random.default_rng(7))
    ref = librosa_log_mel(x)
    with torch.no_grad():
        ours = LogMel(method=method)(torch.from_numpy(x)[None])[0].numpy()
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (DEFAULT_FRONTEND.num_frames(len(x)), 40)
    assert np.max(np.abs(ours - ref)) < 1e-3


def test_documented_constants() -> None:
    cfg = DEFAULT_FRONTEND
    assert (cfg.sample_rate, cfg.n_fft, cfg.win_length, cfg.hop_length) == (16_000, 400, 400, 160)
    assert (cfg.n_mels, cfg.fmin_hz, cfg.fmax_hz, cfg.center) == (40, 0.0, 7_500.0, False)
    assert cfg.log_floor == LOG_FLOOR == 1e-6
    assert cfg.frames_per_second == 100.0
    assert [cfg.num_frames(n) for n in (0, 399, 400, 559, 560, 16_000)] == [0, 0, 1, 1, 2, 98]


def test_batch_and_numpy_helper_agree_with_single_signals() -> None:
    rng = np.random.default_rng(3)
    batch = np.stack([breath_like(rng, 2.0), speech_like(rng, 2.0)])
    with torch.no_grad():
        together = LogMel()(torch.from_numpy(batch)).numpy()
    for i in range(2):
        np.testing.assert_allclose(together[i], log_mel(batch[i]), atol=1e-5, rtol=0)


def test_shorter_than_one_window_gives_no_frames() -> None:
    assert log_mel(np.ones(399, np.float32)).shape == (0, 40)


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="method"):
        LogMel(method="wavelet")


def whole(x: np.ndarray, method: str) -> np.ndarray:
    with torch.no_grad():
        return LogMel(method=method)(torch.from_numpy(x)[None])[0].numpy()


def chunked(x: np.ndarray, sizes: list[int], method: str) -> np.ndarray:
    stream = StreamingLogMel(method=method)
    pieces, start = [], 0
    for size in sizes:
        pieces.append(stream.push(x[start : start + size]))
        start += size
    assert start >= len(x)
    return np.concatenate(pieces)


def random_sizes(rng: np.random.Generator, total: int, low: int, high: int) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(int(rng.integers(low, high + 1)))
    return sizes


@pytest.mark.parametrize("method", ["fft", "dft"])
def test_streaming_equals_whole_signal_for_random_chunkings(method: str) -> None:
    rng = np.random.default_rng(11)
    x = breath_like(rng, duration_s=1.237)  # not a whole number of hops
    expected = whole(x, method)
    chunkings = {
        "one_sample": [1] * len(x),
        "tiny": random_sizes(rng, len(x), 1, 7),
        "around_a_hop": random_sizes(rng, len(x), 100, 500),
        "large": random_sizes(rng, len(x), 1_000, 9_000),
        "larger_than_signal": [len(x) + 5_000],
        "whole_then_empty": [len(x), 0, 0],
    }
    # Same frames, same alignment; values equal up to float32 round-off of differently batched convs
    # (seen: 1e-5 on near-floor log energies), far below any misaligned frame (differences of whole units).
    for name, sizes in chunkings.items():
        got = chunked(x, sizes, method)
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0, err_msg=name)


def test_streaming_reset_and_generator_form() -> None:
    rng = np.random.default_rng(5)
    x = speech_like(rng, 1.0)
    stream = StreamingLogMel()
    stream.push(rng.standard_normal(1234).astype(np.float32))  # some other audio, then start over
    stream.reset()
    frames = np.concatenate(list(stream.stream(iter(np.array_split(x, 13)))))
    np.testing.assert_allclose(frames, whole(x, "fft"), atol=1e-5, rtol=0)


def test_streaming_memory_stays_bounded() -> None:
    stream = StreamingLogMel()
    for _ in range(50):
        stream.push(np.full(3_333, 0.01, np.float32))
    assert len(stream._tail) < DEFAULT_FRONTEND.win_length


def test_check_frontend_accepts_equal_and_names_every_difference() -> None:
    check_frontend(DEFAULT_FRONTEND, DEFAULT_FRONTEND.to_dict(), "model.pt")
    check_frontend(DEFAULT_FRONTEND, {**DEFAULT_FRONTEND.to_dict(), "future_key": 1}, "model.pt")
    other = dataclasses.replace(DEFAULT_FRONTEND, n_mels=64, fmax_hz=8_000.0)
    with pytest.raises(FrontEndMismatchError) as info:
        check_frontend(DEFAULT_FRONTEND, other.to_dict(), "model.pt")
    message = str(info.value)
    assert "model.pt" in message and "n_mels: 40 != 64" in message and "fmax_hz" in message
    assert "hop_length" not in message


def test_config_round_trips_through_a_dict() -> None:
    cfg = FrontEndConfig(n_mels=32)
    assert FrontEndConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"htk": True},
        {"mel_norm": None},
        {"n_fft": 512, "win_length": 512, "n_mels": 64, "fmin_hz": 20.0, "fmax_hz": 8000.0},
        {"sample_rate": 8000, "fmax_hz": 3800.0},
    ],
)
def test_mel_matrix_is_librosas_bit_for_bit(changes: dict) -> None:
    """The filterbank is computed without importing librosa (start-up cost), so it must stay librosa's."""
    cfg = dataclasses.replace(DEFAULT_FRONTEND, **changes)
    reference = librosa.filters.mel(
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin_hz,
        fmax=cfg.fmax_hz,
        htk=cfg.htk,
        norm=cfg.mel_norm,
        dtype=np.float32,
    )
    assert np.array_equal(mel_matrix(cfg), reference)
    assert np.array_equal(
        mel_frequencies(cfg.n_mels + 2, cfg.fmin_hz, cfg.fmax_hz, cfg.htk),
        librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.fmin_hz, fmax=cfg.fmax_hz, htk=cfg.htk),
    )


def test_mel_matrix_refuses_an_unknown_norm() -> None:
    with pytest.raises(ValueError, match="mel_norm"):
        mel_matrix(dataclasses.replace(DEFAULT_FRONTEND, mel_norm="l2"))
