"""Tiny on-disk corpora for importer and command-line tests (no real BreathMY data ships with the repo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
RRUJO_DIR = REPO.parent / "shared" / "data" / "rrujo"


def breath_wav(path: Path, rr_bpm: float, duration_s: float = 9.0, rate: int = 8_000, seed: int = 0) -> Path:
    """Noise bursts at ``rr_bpm`` (inhale louder than exhale) as 16-bit PCM: enough to be real audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(duration_s * rate)) / rate
    cycle = (t * max(rr_bpm, 1.0) / 60.0) % 1.0
    envelope = np.where(cycle < 0.4, np.sin(np.pi * cycle / 0.4), 0.5 * np.sin(np.pi * (cycle - 0.4) / 0.6))
    x = 0.3 * envelope**2 * rng.standard_normal(len(t)) + 1e-3 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(x, -1, 1).astype(np.float32), rate, subtype="PCM_16")
    return path


# (folder, file name, sample rate): five subjects, s01 and s02 recorded in two folders each.
BREATHMY_GOOD = [
    ("D_A", "12RR_30cm_2023_05_01_s01.wav", 8_000),
    ("D_A", "40RR_30cm_2023_05_01_s02.wav", 44_100),
    ("D_B", "16RR_50cm_2023_05_02_s01.wav", 48_000),
    ("D_B", "20RR_50cm_2023_05_02_s03.wav", 16_000),
    ("D_C", "8RR_10cm_2023_05_03_s04.wav", 8_000),
    ("D_C", "18RR_10cm_2023_05_03_s05.wav", 8_000),
    ("D_D", "24RR_100cm_2023_05_04_s02.wav", 8_000),
]


def make_breathmy(root: Path) -> dict[str, list[Path]]:
    """Write a BreathMY-layout folder: the good files above plus one of each kind of bad file."""
    good = []
    for i, (folder, name, rate) in enumerate(BREATHMY_GOOD):
        rr_bpm = float(name.split("RR_")[0])
        good.append(breath_wav(root / folder / name, rr_bpm, rate=rate, seed=i))
    bad_name = root / "D_A" / "readme.txt"
    bad_name.write_text("recording notes\n")
    bad_date = breath_wav(root / "D_B" / "12RR_30cm_2023_13_01_s06.wav", 12.0)
    garbage = root / "D_C" / "14RR_30cm_2023_05_03_s07.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + bytes(range(256)))
    too_short = breath_wav(root / "D_D" / "10RR_30cm_2023_05_04_s08.wav", 10.0, duration_s=2.0)
    (root / "D_A" / ".DS_Store").write_bytes(b"\x00")  # hidden files are ignored silently
    breath_wav(root / "extras" / "12RR_30cm_2023_05_01_s09.wav", 12.0)  # not a D_x folder: ignored
    return {"good": good, "bad": [bad_name, bad_date, garbage, too_short]}
