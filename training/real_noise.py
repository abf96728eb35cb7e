"""Real background noise from ``../shared/data/noise`` (Speech Commands, CC BY 4.0), split by time.

The four recorded files are used: an exercise bike, a kitchen, a running tap and a voice.

Each file is cut in time: the first 70 % for training, the next 15 % for validation (model selection
and the estimator's calibration) and the last 15 % for the test report, so an evaluation never hears a
stretch of noise that training or calibration heard (the folder's README asks for a split
by file or by time; six files are too few to split by file). The folder is optional: without it,
:func:`load_noise_bank` returns an empty bank and callers fall back to synthetic noise only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from training.audio import AudioError, load_audio
from training.frontend import SAMPLE_RATE_HZ

DEFAULT_NOISE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "noise"
PART_BOUNDS = {"train": (0.0, 0.7), "val": (0.7, 0.85), "test": (0.85, 1.0)}
PARTS = tuple(PART_BOUNDS)
# The recorded noises. The folder's pink and white noise are generated, not recorded, and
# training.noise already makes coloured noise of every kind, so they are not used.
RECORDED = ("doing_the_dishes", "dude_miaowing", "exercise_bike", "running_tap")


@dataclasses.dataclass
class NoiseBank:
    """Named noise signals (16 kHz float32) for one part (train or eval)."""

    part: str
    signals: dict[str, np.ndarray]

    def __bool__(self) -> bool:
        return bool(self.signals)

    def draw(
        self, num_samples: int, rng: np.random.Generator, name: str | None = None
    ) -> tuple[str, np.ndarray]:
        """A random stretch of ``num_samples`` from a random (or the named) file; a file shorter than
        that is spliced from random pieces of itself (:func:`splice`), never looped."""
        if not self.signals:
            raise ValueError("the noise bank is empty")
        name = name or str(rng.choice(sorted(self.signals)))
        x = self.signals[name]
        if len(x) < num_samples:
            return name, splice(x, num_samples, rng)
        start = int(rng.integers(0, len(x) - num_samples + 1))
        return name, x[start : start + num_samples]


SPLICE_PIECE_S = (1.5, 4.0)
SPLICE_FADE_S = 0.05


def splice(x: np.ndarray, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """``num_samples`` of noise made of pieces of ``x`` of random length (1.5-4 s) from random
    offsets, joined by 50 ms cross-fades.

    Why not loop: the validation and test parts of each file are only 9-14 s long, and a looped
    stretch repeats exactly once per loop, a period of 9-14 s (4-7 breaths/min) that any
    periodicity-based estimator hears as breathing. Real background noise does not repeat; spliced
    pieces do not repeat at any fixed lag.
    """
    rate = SAMPLE_RATE_HZ
    fade = round(SPLICE_FADE_S * rate)
    lo, hi = (round(s * rate) for s in SPLICE_PIECE_S)
    hi = min(hi, len(x))
    lo = min(lo, hi)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    out = np.zeros(num_samples + hi + fade, dtype=np.float32)
    pos = 0
    while pos < num_samples:
        length = int(rng.integers(lo, hi + 1))
        start = int(rng.integers(0, len(x) - length + 1))
        piece = x[start : start + length].astype(np.float32)
        if pos > 0:  # cross-fade into what is already there
            piece = piece.copy()
            piece[:fade] *= ramp
            out[pos : pos + fade] *= ramp[::-1]
        out[pos : pos + length] += piece
        pos += length - fade
    return out[:num_samples]


def load_noise_bank(part: str, noise_dir: Path | str | None = None) -> NoiseBank:
    """The ``part`` (train, val or test; see the module doc) of every recorded file in ``noise_dir``."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, not {part!r}")
    folder = Path(noise_dir) if noise_dir is not None else DEFAULT_NOISE_DIR
    signals: dict[str, np.ndarray] = {}
    if not folder.is_dir():
        return NoiseBank(part, signals)
    for path in (folder / f"{name}.flac" for name in RECORDED):
        if not path.is_file():
            continue
        try:
            audio = load_audio(path, SAMPLE_RATE_HZ)
        except AudioError:
            continue
        lo, hi = PART_BOUNDS[part]
        signals[path.stem] = audio[int(lo * len(audio)) : int(hi * len(audio))]
    return NoiseBank(part, signals)
