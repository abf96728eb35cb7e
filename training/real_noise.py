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

from training.audio import TARGET_SAMPLE_RATE, AudioError, load_audio

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
        """A random stretch of ``num_samples`` from a random (or the named) file, looped if short."""
        if not self.signals:
            raise ValueError("the noise bank is empty")
        name = name or str(rng.choice(sorted(self.signals)))
        x = self.signals[name]
        if len(x) < num_samples:
            x = np.tile(x, -(-num_samples // len(x)))
        start = int(rng.integers(0, len(x) - num_samples + 1))
        return name, x[start : start + num_samples]


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
            audio = load_audio(path, TARGET_SAMPLE_RATE)
        except AudioError:
            continue
        lo, hi = PART_BOUNDS[part]
        signals[path.stem] = audio[int(lo * len(audio)) : int(hi * len(audio))]
    return NoiseBank(part, signals)
