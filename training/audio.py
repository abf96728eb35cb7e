"""Audio loading: any common file -> mono float32 at the front-end's rate (16 kHz), or one clear error.

wav/flac/ogg are read by soundfile (libsndfile); mp3/m4a/aac/mp4 (iPhone voice memos are m4a) are
decoded by the ``ffmpeg`` program when it is installed. Everything is downmixed to mono by averaging
channels and resampled with soxr (a high-quality polyphase resampler, the one librosa uses).

Every problem with the input raises :class:`AudioError`, whose message names the file and the problem,
so a batch tool can report a bad file and go on with the others.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from training.frontend import SAMPLE_RATE_HZ

MIN_DURATION_S = 1.0
# Peak below this (about -120 dBFS) counts as digital silence: nothing to estimate from.
SILENCE_PEAK = 1e-6

SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif"}
FFMPEG_SUFFIXES = {".mp3", ".m4a", ".aac", ".mp4", ".caf", ".opus", ".webm"}
FFMPEG_HINT = "install ffmpeg (Debian/Ubuntu: sudo apt-get install ffmpeg; macOS: brew install ffmpeg)"


class AudioError(ValueError):
    """The audio could not be used: the message names the file and what is wrong with it."""


def resample(audio: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Band-limited resampling (soxr, high quality). Returns float32."""
    if from_rate == to_rate:
        return np.asarray(audio, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(audio, dtype=np.float32), from_rate, to_rate, quality="HQ").astype(
        np.float32
    )


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"{path}: not readable as audio ({exc})") from exc
    return data, int(rate)


def _read_ffmpeg(path: Path, target_rate: int) -> tuple[np.ndarray, int]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(
            f"{path}: decoding {path.suffix} files needs ffmpeg, which is not installed; {FFMPEG_HINT}"
        )
    cmd = [
        ffmpeg,
        "-nostdin",
        "-v",
        "error",
        "-i",
        str(path),
        "-f",
        "f32le",
        "-acodec",
        "pcm_f32le",
        "-ac",
        "1",
        "-ar",
        str(target_rate),
        "-",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        last_line = reason[-1] if reason else "no reason given"
        raise AudioError(f"{path}: ffmpeg could not decode it ({last_line})")
    data = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    return data[:, None], target_rate


def check_audio(
    audio: np.ndarray, sample_rate: int, name: str, min_duration_s: float = MIN_DURATION_S
) -> None:
    """Raise :class:`AudioError` for empty, too-short, non-finite or silent audio."""
    if audio.size == 0:
        raise AudioError(f"{name}: no audio samples (empty or truncated file)")
    duration_s = audio.shape[0] / sample_rate
    if duration_s < min_duration_s:
        raise AudioError(f"{name}: too short ({duration_s:.2f} s; at least {min_duration_s:g} s is needed)")
    finite = np.isfinite(audio)
    if not finite.all():
        bad = int((~finite).sum())
        what = "all samples are NaN/inf" if bad == audio.size else f"{bad} samples are NaN/inf"
        raise AudioError(f"{name}: {what}")
    if float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise AudioError(f"{name}: silent (peak below {SILENCE_PEAK:g}): no breathing can be heard")


def load_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE_HZ,
    min_duration_s: float = MIN_DURATION_S,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> np.ndarray:
    """Load ``path`` as mono float32 at ``sample_rate``, optionally only ``[start_s, end_s)``.

    Raises :class:`AudioError` for a missing, empty, truncated, non-audio, non-finite, silent or
    too-short file, or a format that needs ffmpeg where it is absent.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    suffix = path.suffix.lower()
    if suffix in FFMPEG_SUFFIXES:
        data, rate = _read_ffmpeg(path, sample_rate)
    else:
        data, rate = _read_soundfile(path)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if start_s or end_s is not None:
        first = round(start_s * rate)
        last = mono.shape[0] if end_s is None else round(end_s * rate)
        if first >= mono.shape[0] or last <= first:
            raise AudioError(
                f"{path}: segment {start_s:g}-{end_s}s is outside the recording "
                f"({mono.shape[0] / rate:.2f} s long)"
            )
        mono = mono[first:last]
    check_audio(mono, rate, str(path), min_duration_s)
    return resample(mono, rate, sample_rate)
