"""How long the default model takes to train, and how much memory it needs.

    .venv/bin/python bench/training_speed.py [--data DIR ...] [--segments 1500] [--threads N]

Trains the default configuration (``TrainConfig()``: TC-LSTM-32, Adam lr 0.01, batch 64, early stopping)
on the given corpora, or on a synthetic corpus built for the purpose (``--segments`` rows) when none is
given, and prints: corpus build time, feature loading time, time per epoch (training + validation),
epochs to early stop and the time it took, and the process's peak resident memory (ru_maxrss).
Wall-clock times: training is what a person waits for. Other work on the machine slows them down.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, peak_rss_mib, table

from training.config import TrainConfig
from training.dataset import load_examples
from training.synth import build_synthetic_corpus
from training.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", action="append", type=Path, metavar="DIR", help="corpus folder(s)")
    parser.add_argument("--segments", type=int, default=1500, help="synthetic corpus size if no --data")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}; torch threads: {torch.get_num_threads()}")

    with tempfile.TemporaryDirectory(prefix="respira-bench-train-") as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, work: Path) -> None:
    rows = []
    if args.data:
        corpora = args.data
    else:
        start = time.monotonic()
        build_synthetic_corpus(work / "synth", args.segments, seed=0, progress=False)
        took = time.monotonic() - start
        rows.append([f"build synthetic corpus ({args.segments} segments)", f"{took:.1f} s"])
        corpora = [work / "synth"]
    start = time.monotonic()
    train_examples = load_examples(corpora, ["train"], progress=False)
    val_examples = load_examples(corpora, ["val"], progress=False)
    audio_h = sum(e.segment.duration_s for e in train_examples) / 3600
    rows.append(
        [
            f"load + features ({len(train_examples)} train, {len(val_examples)} val segments)",
            f"{time.monotonic() - start:.1f} s",
        ]
    )
    rss_before = peak_rss_mib()

    cfg = TrainConfig()
    cpu_start = time.process_time()
    summary = train(
        cfg,
        corpora,
        work / "model.pt",
        progress=False,
        train_examples=train_examples,
        val_examples=val_examples,
    )
    train_cpu_s = time.process_time() - cpu_start
    elapsed = [h["elapsed_s"] for h in summary["history"]]
    per_epoch = np.diff([0.0, *elapsed])
    rows += [
        [
            "time per epoch (train + validation): median [min, max]",
            f"{np.median(per_epoch):.1f} s [{per_epoch.min():.1f}, {per_epoch.max():.1f}]",
        ],
        ["training audio per epoch", f"{audio_h:.2f} h"],
        [
            f"epochs run (early stop: patience {cfg.patience}, at most {cfg.max_epochs})",
            f"{summary['epochs_run']} (best epoch {summary['best_epoch']})",
        ],
        ["time to early stop (training loop, wall)", f"{summary['train_seconds']:.1f} s"],
        ["CPU time of the training loop (all threads)", f"{train_cpu_s:.1f} s"],
        ["validation CCC of RR at the best epoch", f"{summary['val_ccc_rr']:.3f}"],
        ["peak RSS after loading features", f"{rss_before:.0f} MiB"],
        ["peak RSS (whole run, ru_maxrss)", f"{peak_rss_mib():.0f} MiB"],
    ]
    print(f"corpora: {', '.join(map(str, corpora))}")
    shown = ("model_type", "units", "batch_size", "lr", "patience", "max_epochs")
    print("config: " + ", ".join(f"{k}={getattr(cfg, k)}" for k in shown))
    print()
    print(table(["quantity", "value"], rows))


if __name__ == "__main__":
    main()
