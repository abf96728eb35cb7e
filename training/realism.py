"""How much the synthetic breath resembles real recordings: breath-cycle loudness, measured alike.

``python -m training data realism --rrujo DIR --out FIGURE.png`` folds each recording's broadband
loudness (the DSP baseline's octave-band envelopes, summed) over its breathing period and reports:

- the **cycle depth**: within each breath cycle, loudest minus quietest envelope frame (dB), the
  median over cycles: how far a pause falls under a breath;
- the **folded profile**: the mean loudness at each phase of the cycle, aligned on its peak, averaged
  over recordings: the shape of a typical breath.

For RRuJO the period is the paced rate; for the generator it is the generated rate. The figure puts
the real recordings beside the generator as it is and as it was before the room floor
(:func:`training.synth.room_floor`) was added, i.e. with only the -80 dBFS self-noise between breaths.
Both are chest-free here: the comparison is of loudness over time, which does not depend on where the
microphone sits, not of spectra, which do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.audio import load_audio
from training.dsp_baseline import DEFAULT_CONFIG, band_envelopes
from training.frontend import SAMPLE_RATE_HZ

PROFILE_BINS = 40
PACED_RATES_BPM = (8.0, 10.0, 12.0, 18.0, 20.0)


@dataclasses.dataclass
class CycleStats:
    depth_db: float
    profile_db: np.ndarray  # [PROFILE_BINS], peak first, mean removed


def cycle_stats(audio: np.ndarray, rate_bpm: float, sample_rate: int = SAMPLE_RATE_HZ) -> CycleStats:
    env, env_rate = band_envelopes(audio, sample_rate, DEFAULT_CONFIG)
    loudness_db = 10.0 * np.log10(np.exp(env).sum(axis=0))
    period = 60.0 / rate_bpm * env_rate
    cycles = int(len(loudness_db) // period)
    depths = [np.ptp(loudness_db[int(k * period) : int((k + 1) * period)]) for k in range(cycles)]
    phase = (np.arange(len(loudness_db)) % period) / period
    bins = np.minimum((phase * PROFILE_BINS).astype(int), PROFILE_BINS - 1)
    profile = np.array([loudness_db[bins == b].mean() for b in range(PROFILE_BINS)])
    profile = np.roll(profile - profile.mean(), -int(np.argmax(profile)))
    return CycleStats(float(np.median(depths)) if depths else float("nan"), profile)


def rrujo_stats(rrujo_dir: Path, every: int = 7) -> list[CycleStats]:
    """Every ``every``-th recording of an RRuJO folder (recordings.csv), at its paced rate."""
    import csv

    with open(rrujo_dir / "recordings.csv", newline="") as f:
        rows = list(csv.DictReader(f))[::every]
    return [cycle_stats(load_audio(rrujo_dir / r["path"], SAMPLE_RATE_HZ), float(r["rr_bpm"])) for r in rows]


def synthetic_stats(n: int = 30, seed: int = 0, room_floor: bool = True) -> list[CycleStats]:
    """Clean generated recordings of 60 s at the paced rates, with or without the room floor."""
    from training.synth import ROOM_FLOOR_BELOW_BREATH_DB, make_participant, synth_recording

    rng = np.random.default_rng(seed)
    stats = []
    for i in range(n):
        person = make_participant(f"realism-{i}", seed * 1000 + i)
        rate = float(rng.choice(PACED_RATES_BPM))
        rec = synth_recording(
            person,
            None,
            60.0,
            np.random.default_rng([seed, i]),
            rate_bpm=rate,
            room_floor_below_breath_db=ROOM_FLOOR_BELOW_BREATH_DB if room_floor else None,
        )
        stats.append(cycle_stats(rec.audio, float(np.mean(rec.cycles.rate_bpm))))
    return stats


def summary(stats: Sequence[CycleStats]) -> dict:
    depths = np.array([s.depth_db for s in stats])
    profile = np.mean([s.profile_db for s in stats], axis=0)
    return {
        "recordings": len(stats),
        "depth_db_median": float(np.median(depths)),
        "depth_db_iqr": [float(np.percentile(depths, 25)), float(np.percentile(depths, 75))],
        "profile_range_db": float(np.ptp(profile)),
        "profile_db": [round(float(v), 2) for v in profile],
    }


def compare(rrujo_dir: Path, out_png: Path, seed: int = 0) -> dict[str, dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {
        "RRuJO (real, chest)": summary(rrujo_stats(rrujo_dir)),
        "generator before (-80 dBFS floor)": summary(synthetic_stats(seed=seed, room_floor=False)),
        "generator now (room floor)": summary(synthetic_stats(seed=seed, room_floor=True)),
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=120)
    phase = np.arange(PROFILE_BINS) / PROFILE_BINS
    for name, r in results.items():
        left.plot(phase, r["profile_db"], label=name)
    left.set_xlabel("phase of the breath cycle (peak at 0)")
    left.set_ylabel("loudness re. mean (dB)")
    left.set_title("Mean cycle profile")
    left.legend(fontsize=7)
    names = list(results)
    right.bar(range(3), [results[n]["depth_db_median"] for n in names], color=["C0", "C1", "C2"])
    right.errorbar(
        range(3),
        [results[n]["depth_db_median"] for n in names],
        yerr=np.abs(
            np.array([results[n]["depth_db_iqr"] for n in names]).T
            - [results[n]["depth_db_median"] for n in names]
        ),
        fmt="none",
        color="k",
        capsize=3,
    )
    right.set_xticks(range(3), ["RRuJO", "before", "now"])
    right.set_ylabel("median cycle depth (dB), IQR")
    right.set_title("How far a pause falls under a breath")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return results
