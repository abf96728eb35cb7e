"""How fast estimation runs on one core, measured side by side in one run.

    .venv/bin/python bench/estimate_throughput.py [--checkpoint CKPT] [--files 60] [--rrujo DIR]

1. Whole process: ``python -m training.estimate`` run as users run it, on real recordings at their native
   sample rates (the first ``--files`` RRuJO recordings, 2-8 kHz FLAC), with one torch and BLAS thread.
   Audio seconds per CPU second of the whole process (user + system, start-up and imports included,
   from the child's rusage), beside the same for a process that only imports the estimator.
2. Where the time goes inside (CPU s, one thread): decoding and resampling, features, the model's
   phase track, the DSP evidence and the window decisions, the segment heads.
3. Streaming: CPU cost of one 100 ms chunk, in torch (front-end + ``RRModel.forward_chunk``) and in the
   numpy interpreter running the exported ``.mlpackage`` (coreml.verify.PackageStreamer).

CPU time rather than wall time, so other processes on the machine disturb the figures little.
"""

from __future__ import annotations

import os

# One core, measured as one core: numpy's BLAS (the interpreter's matmuls) gets one thread like torch.
# Set before numpy loads; threads only add contention for 100 ms chunks (20x slower on a busy machine).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import contextlib
import csv
import io
import resource
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from common import ROOT, bench_checkpoint, cpu_seconds, machine, table

from training.audio import load_audio
from training.dsp_baseline import DEFAULT_CONFIG as DSP_CONFIG
from training.dsp_baseline import band_envelopes
from training.estimate import FILES_PER_BATCH
from training.estimator import (
    DEFAULT_ESTIMATOR,
    MIN_DURATION_S,
    phase_track,
    phase_tracks,
    segment_outputs,
    timeline_ends,
    window_evidence,
)
from training.frontend import DEFAULT_FRONTEND
from training.logmel import StreamingLogMel, log_mel
from training.models import RRModel

TARGET_REAL_TIME = 1000.0
CHUNK_SAMPLES = 1600
DEFAULT_RRUJO = ROOT.parent / "shared" / "data" / "rrujo"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def real_files(rrujo: Path, n_files: int) -> list[tuple[Path, float]]:
    """The first ``n_files`` RRuJO recordings (path, duration in s), in the order of recordings.csv."""
    with open(rrujo / "recordings.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [(rrujo / r["path"], float(r["duration_s"])) for r in rows[:n_files]]


def child_cpu_seconds(args: list[str]) -> float:
    """User + system CPU seconds of a child process run to completion (its output discarded)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, cwd=ROOT, env={**os.environ, **ONE_THREAD})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def whole_process(files: list[Path], checkpoint: Path, repeats: int) -> tuple[float, float]:
    """Least CPU seconds of ``repeats`` runs: the estimate command on ``files``, and an import alone."""
    cmd = [
        sys.executable,
        "-m",
        "training.estimate",
        *map(str, files),
        "--checkpoint",
        str(checkpoint),
        "--json",
    ]
    imports = [sys.executable, "-c", "import training.estimate, training.checkpoint"]
    return (
        min(child_cpu_seconds(cmd) for _ in range(repeats)),
        min(child_cpu_seconds(imports) for _ in range(repeats)),
    )


@torch.no_grad()
def torch_chunk_cost(model: RRModel, audio: np.ndarray, method: str) -> float:
    """CPU seconds per 100 ms chunk: streaming front-end + forward_chunk, state carried along."""
    frontend = StreamingLogMel(DEFAULT_FRONTEND, method=method)
    chunks = audio[: len(audio) // CHUNK_SAMPLES * CHUNK_SAMPLES].reshape(-1, CHUNK_SAMPLES)
    lead_in = np.zeros(DEFAULT_FRONTEND.win_length - DEFAULT_FRONTEND.hop_length, np.float32)

    def run() -> None:
        frontend.reset()
        frontend.push(lead_in)  # as the package does: 15 ms of silence first, so every chunk gives 10 frames
        state = model.initial_state()
        for chunk in chunks:
            frames = frontend.push(chunk)
            _, state = model.forward_chunk(torch.from_numpy(frames)[None], state)

    return cpu_seconds(run) / len(chunks)


def torch_package_chunk_cost(model: RRModel, audio: np.ndarray, n_chunks: int, traced: bool = True) -> float:
    """CPU seconds per chunk of the torch module traced into the package: front-end, model and the
    rolling estimator (coreml.streaming.ExplicitStreamer), states fed back; traced (what coreml verify
    runs as its reference, coreml.verify.TorchStreamer) or eagerly, op by op from Python."""
    from coreml.streaming import STATE_NAMES, ExplicitStreamer, zero_states
    from coreml.verify import TorchStreamer

    chunks = audio[: n_chunks * CHUNK_SAMPLES].reshape(-1, CHUNK_SAMPLES)
    if traced:
        streamer = TorchStreamer(model)

        def run() -> None:
            streamer.reset()
            for chunk in chunks:
                streamer.push(chunk)

        return cpu_seconds(run) / len(chunks)
    eager = ExplicitStreamer(model).eval()
    zeros = zero_states(model)

    @torch.no_grad()
    def run_eagerly() -> None:
        states = [torch.from_numpy(zeros[n]) for n in STATE_NAMES]
        for chunk in chunks:
            states = list(eager(torch.from_numpy(chunk)[None], *states)[-len(STATE_NAMES) :])

    return cpu_seconds(run_eagerly) / len(chunks)


def interpreter_chunk_cost(package: Path, audio: np.ndarray, n_chunks: int) -> float:
    from coreml.interpreter import load_package
    from coreml.verify import PackageStreamer

    streamer = PackageStreamer(load_package(package))
    chunks = audio[: n_chunks * CHUNK_SAMPLES].reshape(-1, CHUNK_SAMPLES)

    def run() -> None:
        streamer.reset()
        for chunk in chunks:
            streamer.push(chunk)

    return cpu_seconds(run) / len(chunks)


def breakdown(files: list[Path], model: RRModel, repeats: int) -> list[list[str]]:
    """CPU seconds of each part of the estimate path, timed separately on the same files."""
    cfg = DEFAULT_ESTIMATOR
    audios = [load_audio(p, DEFAULT_FRONTEND.sample_rate, min_duration_s=MIN_DURATION_S) for p in files]
    features = [log_mel(a) for a in audios]
    tracks = [phase_track(model, a) for a in audios]

    def windows() -> None:
        for audio, track in zip(audios, tracks, strict=True):
            duration_s = len(audio) / DEFAULT_FRONTEND.sample_rate
            window_evidence(audio, track, 0.0, duration_s)
            for end_s in timeline_ends(duration_s, cfg.timeline_hop_s):
                if end_s - max(0.0, end_s - cfg.window_s) >= MIN_DURATION_S:
                    window_evidence(audio, track, max(0.0, end_s - cfg.window_s), end_s)

    parts = {
        "decode + resample to 16 kHz (load_audio)": lambda: [
            load_audio(p, DEFAULT_FRONTEND.sample_rate, min_duration_s=MIN_DURATION_S) for p in files
        ],
        "log-mel features": lambda: [log_mel(a) for a in audios],
        "model phase track, one recording at a time": lambda: [
            phase_track(model, a, with_dsp=False) for a in audios
        ],
        f"model phase tracks, {FILES_PER_BATCH} recordings at a time (the command's way)": lambda: [
            phase_tracks(model, audios[i : i + FILES_PER_BATCH], with_dsp=False)
            for i in range(0, len(audios), FILES_PER_BATCH)
        ],
        "DSP band envelopes (whole recording, once)": lambda: [
            band_envelopes(a, DEFAULT_FRONTEND.sample_rate, DSP_CONFIG) for a in audios
        ],
        "autocorrelations and decisions (recording + timeline)": windows,
        "segment heads (6 s windows)": lambda: [
            segment_outputs(f, model, len(a) / DEFAULT_FRONTEND.sample_rate)
            for f, a in zip(features, audios, strict=True)
        ],
    }
    return [[name, f"{cpu_seconds(fn, repeats):.3f}"] for name, fn in parts.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="model to time (default: shipped model, else random weights)")
    parser.add_argument("--files", type=int, default=60, help="real recordings to estimate (default 60)")
    parser.add_argument("--rrujo", type=Path, default=DEFAULT_RRUJO, help="the RRuJO folder (../shared/...)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the best is kept")
    args = parser.parse_args()
    if not (args.rrujo / "recordings.csv").is_file():
        sys.exit(f"error: {args.rrujo}: no RRuJO recordings here (pass --rrujo DIR)")
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    with tempfile.TemporaryDirectory(prefix="respira-bench-") as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, work: Path) -> None:
    from training.checkpoint import load_checkpoint

    checkpoint, which = bench_checkpoint(args.checkpoint, work)
    model, _ = load_checkpoint(checkpoint)
    chosen = real_files(args.rrujo, args.files)
    files = [p for p, _ in chosen]
    audio_s = sum(d for _, d in chosen)
    print(f"machine: {machine()}; torch threads: {torch.get_num_threads()}")
    print(f"model: {which}")
    print(f"audio: {len(files)} RRuJO recordings at their native rates, {audio_s:.0f} s in all\n")

    # -- 1. the whole estimate process ----------------------------------------------------------------
    process_cpu, import_cpu = whole_process(files, checkpoint, args.repeats)
    print("## python -m training.estimate, whole process (start-up included), one thread")
    print(
        table(
            ["what", "CPU s", "audio s per CPU s"],
            [
                ["estimate command on all files", f"{process_cpu:.2f}", f"{audio_s / process_cpu:,.0f}x"],
                ["of which: start-up (imports only)", f"{import_cpu:.2f}", ""],
                [
                    "the work after start-up",
                    f"{process_cpu - import_cpu:.2f}",
                    f"{audio_s / max(process_cpu - import_cpu, 1e-9):,.0f}x",
                ],
            ],
        )
    )
    ratio = audio_s / process_cpu
    verdict = "meets" if ratio >= TARGET_REAL_TIME else "MISSES"
    print(f"target >= {TARGET_REAL_TIME:,.0f}x real time per core: {verdict} ({ratio:,.0f}x)\n")
    print("## Where the time goes (CPU s, in-process, parts timed separately)")
    print(table(["part", "CPU s"], breakdown(files, model, args.repeats)) + "\n")

    # -- 2. streaming cost per 100 ms chunk -----------------------------------------------------------
    from coreml.cli import cost_summary
    from coreml.export import export_package

    package = work / "bench.mlpackage"
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # converter chatter
        warnings.simplefilter("ignore")
        export_package(package, checkpoint, "explicit", CHUNK_SAMPLES, "float32")
    stream_audio = load_audio(files[0], DEFAULT_FRONTEND.sample_rate)
    costs = {
        "torch, FFT front-end (StreamingLogMel) + forward_chunk": torch_chunk_cost(
            model, stream_audio, "fft"
        ),
        "torch, two-stage DFT front-end (as in the package) + forward_chunk": torch_chunk_cost(
            model, stream_audio, "dft"
        ),
        "torch, the package's module (model + rolling estimator), eager": torch_package_chunk_cost(
            model, stream_audio, 100, traced=False
        ),
        "torch, the package's module, traced (verify's reference)": torch_package_chunk_cost(
            model, stream_audio, 100
        ),
        "interpreter, explicit float32 .mlpackage": interpreter_chunk_cost(package, stream_audio, 100),
    }
    cost = cost_summary(str(package))
    macs_per_chunk = cost["multiply_adds"]
    macs_per_audio_s = cost["multiply_adds_per_second_of_audio"]
    chunk_s = CHUNK_SAMPLES / DEFAULT_FRONTEND.sample_rate
    print(f"## Streaming: one {chunk_s * 1000:.0f} ms chunk ({CHUNK_SAMPLES} samples), one thread")
    print(
        table(
            ["runner", "CPU us per chunk", "x real time", "effective GMAC/s"],
            [
                [name, f"{c * 1e6:,.0f}", f"{chunk_s / c:,.0f}x", f"{macs_per_chunk / c / 1e9:.2f}"]
                for name, c in costs.items()
            ],
        )
    )
    print()
    # -- 3. work ----------------------------------------------------------------------------------------
    print("## Multiply-adds (python -m coreml cost on the exported package)")
    print(
        table(
            ["quantity", "value"],
            [
                ["multiply-adds per 100 ms call", f"{macs_per_chunk:,}"],
                ["multiply-adds per second of audio", f"{macs_per_audio_s:,}"],
                ["model parameters", f"{cost['model_parameters']:,}"],
                ["package size on disk", f"{cost['package_bytes'] / 1024:.0f} KiB"],
            ],
        )
    )


if __name__ == "__main__":
    main()
