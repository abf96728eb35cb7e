"""Shared pieces of the bench scripts: a checkpoint to time, synthetic audio files, timing and tables.

Speed does not depend on the weights, so when the shipped model is absent (and no --checkpoint is
given) the benches time a randomly initialised model of the default shape, saved like a real one.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from a clean checkout
    sys.path.insert(0, str(ROOT))


def bench_checkpoint(path: str | Path | None, workdir: Path) -> tuple[Path, str]:
    """The checkpoint to time and a note saying which it is."""
    from training.checkpoint import DEFAULT_CHECKPOINT, save_checkpoint
    from training.config import TrainConfig
    from training.models import RRModel

    if path is not None:
        return Path(path), f"given checkpoint {path}"
    if DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT, f"shipped default model {DEFAULT_CHECKPOINT.relative_to(ROOT)}"
    import torch

    torch.manual_seed(0)
    cfg = TrainConfig()
    model = RRModel.from_config(cfg)
    out = save_checkpoint(workdir / "random-tclstm32.pt", model, cfg, summary={"note": "random weights"})
    return out, "randomly initialised TC-LSTM-32 (shipped model absent; speed does not depend on weights)"


def synth_files(directory: Path, n_files: int, duration_s: float, seed: int = 0) -> list[Path]:
    """``n_files`` synthetic breath recordings of ``duration_s`` s as 16 kHz 16-bit FLAC (like a corpus)."""
    import numpy as np
    import soundfile as sf

    from training.frontend import SAMPLE_RATE_HZ
    from training.synth import make_participant, synth_recording

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        rng = np.random.default_rng([seed, i])
        person = make_participant(f"bench-{i}", seed * 1000 + i)
        noisy = i % 2 == 1
        rec = synth_recording(
            person,
            stage=1 + i % 4,
            duration_s=duration_s,
            rng=rng,
            noise_kind="fan" if noisy else None,
            snr_db=10.0 if noisy else None,
        )
        path = directory / f"bench-{i:03d}.flac"
        sf.write(path, rec.audio, SAMPLE_RATE_HZ, format="FLAC", subtype="PCM_16")
        paths.append(path)
    return paths


def cpu_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    """Least CPU time (time.process_time) of ``repeats`` calls: the run least disturbed by others."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {cpu}, {os.cpu_count()} CPUs, load average {load:.2f} at start"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (pasted as is into docs/benchmarks.md)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
