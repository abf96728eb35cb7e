"""What a corpus holds: label counts, the RR range, and the RR histogram (the paper's Fig. 3).

Counts list every known value of a column (so a missing class shows as 0, not as nothing) followed by
any other value found; an empty ``stage``/``split``/``gender``/``snr_db`` shows as ``-``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from training.manifest import BREATH_CLASSES, ENVIRONMENTS, SPLITS, Segment

HISTOGRAM_NAME = "rr_histogram.png"
RR_BIN_WIDTH_BPM = 1.0  # bins centred on whole rates (paced corpora label whole numbers)

# Column -> the values always listed, in this order (others found are appended).
COUNTED = {
    "breath_class": BREATH_CLASSES,
    "stage": ("1", "2", "3", "4", "-"),
    "split": (*SPLITS, "-"),
    "environment": ENVIRONMENTS,
    "noisy": ("0", "1"),
    "gender": ("female", "male", "other", "-"),
    "source": (),
}


def _value(seg: Segment, column: str) -> str:
    value = getattr(seg, column)
    return "-" if value is None or value == "" else str(value)


def corpus_stats(segments: list[Segment]) -> dict:
    """Counts per column in :data:`COUNTED`, plus sizes and the RR mean/min/max (numbers, for tools)."""
    rr = np.array([s.rr_bpm for s in segments], dtype=np.float64)
    counts = {}
    for column, known in COUNTED.items():
        found = Counter(_value(s, column) for s in segments)
        counts[column] = {v: found.get(v, 0) for v in known} | {
            v: n for v, n in sorted(found.items()) if v not in known
        }
    return {
        "segments": len(segments),
        "duration_h": sum(s.duration_s for s in segments) / 3600,
        "participants": len({s.participant for s in segments}),
        "recordings": len({s.recording or s.path for s in segments}),
        "counts": counts,
        "rr_bpm": {
            "mean": float(rr.mean()) if len(rr) else float("nan"),
            "min": float(rr.min()) if len(rr) else float("nan"),
            "max": float(rr.max()) if len(rr) else float("nan"),
        },
    }


def format_stats(stats: dict) -> str:
    """The stats as aligned text lines, one line per column."""
    lines = [
        f"segments: {stats['segments']} ({stats['duration_h']:.2f} h), "
        f"participants: {stats['participants']}, recordings: {stats['recordings']}"
    ]
    for column, counts in stats["counts"].items():
        cells = "  ".join(f"{value}={n}" for value, n in counts.items())
        lines.append(f"{column + ':':<14}{cells}")
    rr = stats["rr_bpm"]
    lines.append(f"{'rr_bpm:':<14}mean={rr['mean']:.2f}  min={rr['min']:.2f}  max={rr['max']:.2f}")
    return "\n".join(lines)


def _group_label(by: str, key: str) -> str:
    if by == "stage":
        return "no stage" if key == "-" else f"stage {key}"
    return "unsplit" if key == "-" else key


def save_rr_histogram(segments: list[Segment], path: Path | str, title: str = "") -> Path:
    """Stacked RR histogram, one colour per workout stage when stages are labelled, else per split.

    Uses matplotlib's Agg canvas directly (no pyplot), so it works headless and leaves no global state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    by = "stage" if any(s.stage is not None for s in segments) else "split"
    order = COUNTED[by]
    groups: dict[str, list[float]] = {}
    for seg in segments:
        groups.setdefault(_value(seg, by), []).append(seg.rr_bpm)
    keys = [k for k in order if k in groups] + sorted(k for k in groups if k not in order)
    labels = [_group_label(by, k) for k in keys]
    top = max([60.0, *(s.rr_bpm for s in segments)])
    half = RR_BIN_WIDTH_BPM / 2
    bins = np.arange(-half, top + RR_BIN_WIDTH_BPM + half, RR_BIN_WIDTH_BPM)

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if keys:
        ax.hist([groups[k] for k in keys], bins=bins.tolist(), stacked=True, label=labels, edgecolor="white")
        ax.legend(title=by)
    ax.set_xlabel("respiratory rate (breaths/min)")
    ax.set_ylabel("segments")
    ax.set_title(title or f"RR distribution ({len(segments)} segments)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
