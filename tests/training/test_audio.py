"""Audio loading: formats, downmix, resampling quality, and one clear error for every kind of bad input."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training import audio
from training.audio import AudioError, load_audio, resample
from training.frontend import SAMPLE_RATE_HZ


def tone(freq_hz: float, rate: int, duration_s: float = 2.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(duration_s * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def peak_frequency_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def rms(x: np.ndarray) -> float:
    # Leave out the edges, where the resampler's filter runs in from zero.
    core = x[len(x) // 10 : -len(x) // 10]
    return float(np.sqrt(np.mean(np.square(core, dtype=np.float64))))


@pytest.mark.parametrize(("suffix", "subtype"), [(".wav", "PCM_16"), (".flac", "PCM_24"), (".ogg", "VORBIS")])
def test_soundfile_formats_load_as_mono_float32_at_16k(tmp_path: Path, suffix: str, subtype: str) -> None:
    x = tone(440.0, 16_000)
    path = tmp_path / f"tone{suffix}"
    sf.write(path, x, 16_000, subtype=subtype)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(x)) <= 16  # ogg may pad a few samples
    assert peak_frequency_hz(y, 16_000) == pytest.approx(440.0, abs=1.0)
    assert rms(y) == pytest.approx(rms(x), rel=0.05)


def test_stereo_is_downmixed_by_averaging(tmp_path: Path) -> None:
    left, right = tone(300.0, 16_000, amplitude=0.4), tone(1200.0, 16_000, amplitude=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16_000, subtype="FLOAT")
    y = load_audio(path)
    assert y.ndim == 1
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize(("rate", "freq_hz"), [(8_000, 1_000.0), (44_100, 3_000.0), (48_000, 5_000.0)])
def test_resampling_keeps_frequency_and_level(tmp_path: Path, rate: int, freq_hz: float) -> None:
    x = tone(freq_hz, rate, amplitude=0.3)
    path = tmp_path / f"tone_{rate}.wav"
    sf.write(path, x, rate, subtype="FLOAT")
    y = load_audio(path)
    assert len(y) == pytest.approx(2.0 * SAMPLE_RATE_HZ, abs=2)
    assert peak_frequency_hz(y, SAMPLE_RATE_HZ) == pytest.approx(freq_hz, abs=1.0)
    assert rms(y) == pytest.approx(0.3 / np.sqrt(2), rel=0.01)


def test_resampler_filters_content_above_the_new_nyquist() -> None:
    """A 12 kHz tone at 48 kHz must vanish at 16 kHz, not fold down to 4 kHz (naive decimation would)."""
    y = resample(tone(12_000.0, 48_000, amplitude=0.5), 48_000, SAMPLE_RATE_HZ)
    assert rms(y) < 1e-3 * 0.5


def test_segment_of_a_file(tmp_path: Path) -> None:
    x = np.concatenate([tone(200.0, 16_000, 1.5), tone(2_000.0, 16_000, 1.5)])
    path = tmp_path / "two_tones.wav"
    sf.write(path, x, 16_000, subtype="FLOAT")
    y = load_audio(path, start_s=1.5, end_s=3.0)
    assert len(y) == 24_000
    assert peak_frequency_hz(y, 16_000) == pytest.approx(2_000.0, abs=1.0)
    with pytest.raises(AudioError, match="outside the recording"):
        load_audio(path, start_s=5.0, end_s=6.0)


def make_m4a(path: Path, x: np.ndarray, rate: int) -> None:
    wav = path.with_suffix(".wav")
    sf.write(wav, x, rate, subtype="PCM_16")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(wav), "-c:a", "aac", "-b:a", "128k", str(path)],
        check=True,
    )


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed: m4a decoding not tested")
def test_m4a_is_decoded_through_ffmpeg(tmp_path: Path) -> None:
    path = tmp_path / "memo.m4a"
    make_m4a(path, tone(1_000.0, 44_100, amplitude=0.3), 44_100)
    y = load_audio(path)
    assert abs(len(y) - 2 * SAMPLE_RATE_HZ) < 0.1 * SAMPLE_RATE_HZ  # AAC adds priming samples
    assert peak_frequency_hz(y, SAMPLE_RATE_HZ) == pytest.approx(1_000.0, abs=2.0)
    assert rms(y) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed: m4a decoding not tested")
def test_corrupt_m4a_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(range(256)) * 4)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert str(path) in str(info.value) and "ffmpeg" in str(info.value)


def test_missing_ffmpeg_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "memo.m4a"
    path.write_bytes(b"not decoded anyway")
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    message = str(info.value)
    assert str(path) in message and "ffmpeg" in message and "install" in message


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def write_audio(path: Path, x: np.ndarray, subtype: str = "FLOAT") -> Path:
    sf.write(path, x, 16_000, subtype=subtype)
    return path


def truncated_header(tmp: Path) -> Path:
    whole = write_audio(tmp / "valid.wav", tone(440.0, 16_000), subtype="PCM_16").read_bytes()
    return write_bytes(tmp / "truncated.wav", whole[:20])


# case -> (make the file in a folder, the problem the message must name)
BAD_INPUTS = {
    "empty": (lambda tmp: write_bytes(tmp / "empty.wav", b""), "empty file"),
    "truncated_header": (truncated_header, "not readable as audio"),
    "non_audio": (
        lambda tmp: write_bytes(tmp / "notes.wav", b"These are meeting notes, not audio.\n" * 50),
        "not readable as audio",
    ),
    "header_only": (
        lambda tmp: write_audio(tmp / "no_frames.wav", np.zeros(0, np.float32)),
        "no audio samples",
    ),
    "all_nan": (
        lambda tmp: write_audio(tmp / "nan.wav", np.full(32_000, np.nan, np.float32)),
        "all samples are NaN",
    ),
    "silent": (
        lambda tmp: write_audio(tmp / "silent.flac", np.zeros(32_000, np.float32), "PCM_16"),
        "silent",
    ),
    "too_short": (lambda tmp: write_audio(tmp / "short.wav", tone(440.0, 16_000, 0.5)), "too short"),
    "missing": (lambda tmp: tmp / "absent.wav", "no such file"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_audio_error_naming_file_and_problem(tmp_path: Path, case: str) -> None:
    make, problem = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    message = str(info.value)
    assert str(path) in message
    assert problem in message


def test_partly_nan_audio_is_refused_with_a_count(tmp_path: Path) -> None:
    x = tone(440.0, 16_000)
    x[100:110] = np.nan
    path = tmp_path / "some_nan.wav"
    sf.write(path, x, 16_000, subtype="FLOAT")
    with pytest.raises(AudioError, match="10 samples are NaN"):
        load_audio(path)


def test_audio_error_is_a_value_error() -> None:
    """Callers that only know ValueError still catch it; batch tools catch AudioError to skip a file."""
    assert issubclass(AudioError, ValueError)
