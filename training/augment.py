"""Noise augmentation: noisy copies of the training partition at the paper's SNR bands.

SNR rule (used by the synthetic generator too, so both label alike). The signal power is measured on
the breath's *active parts* only, because breathing is intermittent: averaging over the quiet rests
would make the same breaths "quieter" in a clip with longer rests, and the noise would be scaled by
how much silence a clip has rather than by how loud the breaths are. Concretely:

- the clean signal is cut into consecutive 20 ms frames (a remainder shorter than a frame is ignored
  unless the signal is shorter than one frame, in which case it is one frame);
- the reference is the 95th percentile of frame power (robust to a single click);
- active frames are those within :data:`ACTIVE_RANGE_DB` (20 dB) of the reference;
- signal power = mean power of the active frames; noise power = mean power of the whole noise
  (backgrounds are treated as stationary over the clip);
- SNR = 10 log10(signal power / noise power).

On a real recording, the "clean" signal is the recording as it is (with whatever noise it already
holds), so the SNR is that of the *added* noise relative to the recording's loud parts.

``noisy`` labels: a segment counts as noisy when noise was added at an SNR below
:data:`NOISY_BELOW_SNR_DB` (30 dB), or when its source row was already noisy. Noise at 30-40 dB sits
well under the breath and is labelled clean, though ``snr_db`` still records it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from training.audio import AudioError, check_audio, load_audio
from training.frontend import SAMPLE_RATE_HZ
from training.manifest import Segment, audio_path, read_manifest, write_manifest
from training.noise import kinds_for, make_noise

SNR_BANDS_DB: tuple[tuple[float, float], ...] = ((10.0, 20.0), (20.0, 30.0), (30.0, 40.0))
NOISY_BELOW_SNR_DB = 30.0
ACTIVE_FRAME_S = 0.02
ACTIVE_REFERENCE_PERCENTILE = 95.0
ACTIVE_RANGE_DB = 20.0
AUG_SUFFIX = "+aug"
# Peak level a written file is kept under (scaling the whole clip keeps its SNR and labels).
MAX_PEAK = 0.99


def frame_powers(signal: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Mean power of consecutive ``ACTIVE_FRAME_S`` frames (float64)."""
    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    frame = max(1, round(ACTIVE_FRAME_S * sample_rate))
    n_frames = x.size // frame
    if n_frames == 0:
        return np.array([np.mean(np.square(x))]) if x.size else np.zeros(0)
    return np.mean(np.square(x[: n_frames * frame].reshape(n_frames, frame)), axis=1)


def active_mask(signal: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Per frame: is it part of the active (loud) breath signal? (see the module docstring)."""
    powers = frame_powers(signal, sample_rate)
    if powers.size == 0:
        return np.zeros(0, dtype=bool)
    reference = np.percentile(powers, ACTIVE_REFERENCE_PERCENTILE)
    return powers >= reference * 10 ** (-ACTIVE_RANGE_DB / 10)


def active_power(signal: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ) -> float:
    """Mean power of the active frames of ``signal`` (0.0 for an all-zero signal)."""
    powers = frame_powers(signal, sample_rate)
    if powers.size == 0 or not np.any(powers > 0):
        return 0.0
    return float(np.mean(powers[active_mask(signal, sample_rate)]))


def fit_length(noise: np.ndarray, num_samples: int) -> np.ndarray:
    """``noise`` cut, or looped, to ``num_samples``."""
    noise = np.asarray(noise, dtype=np.float32).reshape(-1)
    if noise.size == 0:
        raise ValueError("noise is empty")
    if noise.size < num_samples:
        noise = np.tile(noise, -(-num_samples // noise.size))
    return noise[:num_samples]


def scale_noise(
    clean: np.ndarray, noise: np.ndarray, snr_db: float, sample_rate: int = SAMPLE_RATE_HZ
) -> np.ndarray:
    """``noise`` (cut or looped to the clean length) scaled so that it sits ``snr_db`` under ``clean``."""
    noise = fit_length(noise, np.asarray(clean).size)
    signal_power = active_power(clean, sample_rate)
    if signal_power <= 0:
        raise ValueError("clean signal is silent: an SNR against it is undefined")
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    if not noise_power > 0:
        raise ValueError("noise is silent: it cannot be scaled to an SNR")
    gain = np.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return (noise * gain).astype(np.float32)


def mix_at_snr(
    clean: np.ndarray, noise: np.ndarray, snr_db: float, sample_rate: int = SAMPLE_RATE_HZ
) -> np.ndarray:
    """``clean + noise`` with the noise scaled to ``snr_db`` (module rule); same length as ``clean``.

    The result is not limited; see :func:`limit_peak` before writing 16-bit audio.
    """
    clean = np.asarray(clean, dtype=np.float32).reshape(-1)
    return clean + scale_noise(clean, noise, snr_db, sample_rate)


def limit_peak(audio: np.ndarray, max_peak: float = MAX_PEAK) -> np.ndarray:
    """Scale the whole clip down if its peak exceeds ``max_peak`` (SNR and labels are unchanged)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return (audio * (max_peak / peak)).astype(np.float32) if peak > max_peak else audio.astype(np.float32)


def draw_snr_db(rng: np.random.Generator) -> float:
    """An SNR from one of the paper's bands (each band equally likely, uniform within it)."""
    lo, hi = SNR_BANDS_DB[int(rng.integers(0, len(SNR_BANDS_DB)))]
    return float(rng.uniform(lo, hi))


def is_noisy(snr_db: float | None) -> int:
    """The ``noisy`` label for added noise at ``snr_db`` (None: nothing added)."""
    return int(snr_db is not None and snr_db < NOISY_BELOW_SNR_DB)


def combine_snr_db(first_db: float | None, second_db: float) -> float:
    """SNR after adding independent noise at ``second_db`` to a clip that had noise at ``first_db``."""
    if first_db is None:
        return second_db
    return float(-10 * np.log10(10 ** (-first_db / 10) + 10 ** (-second_db / 10)))


def _relocate(segment: Segment, src_dir: Path, out_dir: Path) -> Segment:
    """The row as seen from ``out_dir``: its audio stays where it is (copied through by reference)."""
    if Path(segment.path).is_absolute():
        return dataclasses.replace(segment)
    new_path = os.path.relpath(src_dir / segment.path, out_dir)
    return dataclasses.replace(segment, path=Path(new_path).as_posix())


class _SegmentReader:
    """Reads segments, decoding each file once for a run of rows from the same recording.

    The whole file goes through :func:`training.audio.load_audio` (mono, 16 kHz, validated) and the
    segment is cut from that, then checked like any loaded audio, so errors still name the file.
    """

    def __init__(self) -> None:
        self._path: Path | None = None
        self._audio = np.zeros(0, dtype=np.float32)

    def read(self, path: Path, start_s: float, end_s: float) -> np.ndarray:
        if path != self._path:
            self._audio = load_audio(path, SAMPLE_RATE_HZ)
            self._path = path
        first, last = round(start_s * SAMPLE_RATE_HZ), round(end_s * SAMPLE_RATE_HZ)
        if first >= self._audio.size or last <= first:
            raise AudioError(
                f"{path}: segment {start_s:g}-{end_s:g}s is outside the recording "
                f"({self._audio.size / SAMPLE_RATE_HZ:.2f} s long)"
            )
        segment = self._audio[first:last]
        check_audio(segment, SAMPLE_RATE_HZ, f"{path} [{start_s:g}-{end_s:g}s]")
        return segment


def augment_corpus(
    src_dir: str | Path, out_dir: str | Path, copies: int, seed: int, progress: bool = True
) -> list[Segment]:
    """Write ``out_dir/manifest.csv``: every row of ``src_dir`` plus ``copies`` noisy copies per train row.

    Only rows with ``split == "train"`` are copied (val/test and the originals pass through unchanged,
    their audio referenced where it lies); rows that are themselves augmentations are not augmented
    again. Each copy gets a noise kind plausible for the row's environment and an SNR from
    :data:`SNR_BANDS_DB`; its audio is written to ``out_dir/audio/aug/``, its ``source`` gets the
    ``+aug`` suffix, ``snr_db`` the (combined) SNR, ``noisy`` the module's rule. Deterministic by ``seed``.
    Works on any corpus, real or synthetic: audio is read with :func:`training.audio.load_audio`
    (any format and rate it takes; copies are written as 16 kHz mono FLAC).
    """
    if copies < 0:
        raise ValueError(f"copies must be >= 0, not {copies}")
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if out_dir.resolve() == src_dir.resolve():
        raise ValueError(
            f"{out_dir}: write the augmented corpus to a new folder; the source is left as it is"
        )
    rows = read_manifest(src_dir)
    out_rows = [_relocate(seg, src_dir, out_dir) for seg in rows]
    todo = [
        (i, seg) for i, seg in enumerate(rows) if seg.split == "train" and not seg.source.endswith(AUG_SUFFIX)
    ]
    if todo and copies:
        (out_dir / "audio" / "aug").mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    reader = _SegmentReader()
    for i, seg in tqdm(todo if copies else [], desc="augment", unit="segment", disable=not progress):
        clean = reader.read(audio_path(src_dir, seg), seg.start_s, seg.end_s)
        for c in range(copies):
            rng = np.random.default_rng([seed, i, c])
            snr_db = draw_snr_db(rng)
            kind = str(rng.choice(kinds_for(seg.environment)))
            noise = make_noise(kind, clean.size / SAMPLE_RATE_HZ, rng)
            mixed = limit_peak(mix_at_snr(clean, noise, snr_db))
            total_snr_db = combine_snr_db(seg.snr_db, snr_db)
            rel = Path("audio") / "aug" / f"{i:06d}_{c}.flac"
            sf.write(out_dir / rel, mixed, SAMPLE_RATE_HZ, format="FLAC", subtype="PCM_16")
            out_rows.append(
                dataclasses.replace(
                    seg,
                    path=rel.as_posix(),
                    start_s=0.0,
                    end_s=round(clean.size / SAMPLE_RATE_HZ, 6),
                    noisy=max(seg.noisy, is_noisy(total_snr_db)),
                    snr_db=round(total_snr_db, 3),
                    source=f"{seg.source}{AUG_SUFFIX}",
                    recording=f"{seg.recording or seg.path}{AUG_SUFFIX}{c}",
                )
            )
    write_manifest(out_rows, out_dir)
    return out_rows
