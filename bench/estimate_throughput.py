"""How fast estimation runs on one core, measured side by side in one run.

    .venv/bin/python bench/estimate_throughput.py [--checkpoint CKPT] [--files 20] [--duration-s 60]

1. Offline: seconds of audio per CPU-second (time.process_time, torch on one thread) of the
   ``training.estimate`` path (decode -> features -> model -> aggregation) against a straightforward
   pipeline on the same files (librosa.load, librosa.feature.melspectrogram per window, one torch call
   per window, the same aggregation). Both must give the same rates; the bench checks it.
2. Streaming: CPU cost of one 100 ms chunk, in torch (front-end + ``RRModel.forward_chunk``) and in the
   numpy interpreter running the exported ``.mlpackage`` (coreml.verify.PackageStreamer).
3. Work: multiply-adds per second of audio (coreml.cost, the package's DFT-as-convolution front-end plus
   the model) against the measured rates: effective GMAC/s.

The best of ``--repeats`` runs is kept (CPU time, so other processes on the machine disturb it little).
"""

from __future__ import annotations

import os

# One core, measured as one core: numpy's BLAS (the interpreter's matmuls) gets one thread like torch.
# Set before numpy loads; threads only add contention for 100 ms chunks (20x slower on a busy machine).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import contextlib
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from common import bench_checkpoint, cpu_seconds, machine, synth_files, table

from training.audio import load_audio
from training.estimate import (
    MIN_DURATION_S,
    WINDOW_S,
    estimate_audio,
    estimate_file,
    weighted_median,
    window_starts,
)
from training.frontend import DEFAULT_FRONTEND, StreamingLogMel, log_mel
from training.models import RRModel

TARGET_REAL_TIME = 1000.0
CHUNK_SAMPLES = 1600


@torch.no_grad()
def baseline_file(path: Path, model: RRModel) -> float:
    """The straightforward pipeline: librosa features and one model call per 6 s window."""
    import librosa

    cfg = DEFAULT_FRONTEND
    audio, _ = librosa.load(path, sr=cfg.sample_rate, mono=True)
    starts = window_starts(len(audio) / cfg.sample_rate)
    total_frames = cfg.num_frames(len(audio))
    window_frames = min(int(WINDOW_S * cfg.frames_per_second) - 3, total_frames)
    rates, weights = [], []
    for start_s in starts:
        first = min(round(start_s * cfg.frames_per_second), total_frames - window_frames) * cfg.hop_length
        piece = audio[first : first + (window_frames - 1) * cfg.hop_length + cfg.win_length]
        mel = librosa.feature.melspectrogram(
            y=piece,
            sr=cfg.sample_rate,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            win_length=cfg.win_length,
            center=False,
            power=2.0,
            n_mels=cfg.n_mels,
            fmin=cfg.fmin_hz,
            fmax=cfg.fmax_hz,
        )
        features = torch.from_numpy(np.log(mel + cfg.log_floor).T.astype(np.float32))[None]
        out = model(features)
        breath = torch.softmax(out.breath_logits, -1)[0]
        noise = torch.softmax(out.noise_logits, -1)[0, 1]
        rates.append(float(model.rr_to_bpm(out.rr_z)[0]))
        weights.append(float((1.0 - breath[0]) * (1.0 - noise)) + 1e-3)
    return weighted_median(np.array(rates), np.array(weights))


@torch.no_grad()
def torch_chunk_cost(model: RRModel, audio: np.ndarray, method: str) -> float:
    """CPU seconds per 100 ms chunk: streaming front-end + forward_chunk, state carried along."""
    frontend = StreamingLogMel(DEFAULT_FRONTEND, method=method)
    chunks = audio[: len(audio) // CHUNK_SAMPLES * CHUNK_SAMPLES].reshape(-1, CHUNK_SAMPLES)

    def run() -> None:
        frontend.reset()
        state = model.initial_state()
        for chunk in chunks:
            frames = frontend.push(chunk)
            _, state = model.forward_chunk(torch.from_numpy(frames)[None], state)

    return cpu_seconds(run) / len(chunks)


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


def breakdown(files: list[Path], model: RRModel, total_cpu: float, repeats: int) -> str:
    """Where the estimate path spends its CPU time: decoding, features, model + aggregation."""
    audios = [load_audio(p, DEFAULT_FRONTEND.sample_rate, min_duration_s=MIN_DURATION_S) for p in files]
    decode = cpu_seconds(
        lambda: [load_audio(p, DEFAULT_FRONTEND.sample_rate, min_duration_s=MIN_DURATION_S) for p in files],
        repeats,
    )
    features = cpu_seconds(lambda: [log_mel(a) for a in audios], repeats)
    after_decode = cpu_seconds(lambda: [estimate_audio(a, model) for a in audios], repeats)
    rows = [
        ["decode (load_audio: FLAC, checks)", decode],
        ["features (log_mel, whole file once)", features],
        ["model on all windows + aggregation", after_decode - features],
    ]
    return "Profile of the estimate path (CPU s; parts timed separately, best of runs):\n" + table(
        ["part", "CPU s", "share"],
        [[name, f"{sec:.3f}", f"{100 * sec / total_cpu:.0f} %"] for name, sec in rows],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="model to time (default: shipped model, else random weights)")
    parser.add_argument("--files", type=int, default=20, help="synthetic files (default 20)")
    parser.add_argument("--duration-s", type=float, default=60.0, help="length of each file (default 60)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the best is kept")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    with tempfile.TemporaryDirectory(prefix="respira-bench-") as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, work: Path) -> None:
    from training.checkpoint import load_checkpoint

    checkpoint, which = bench_checkpoint(args.checkpoint, work)
    model, _ = load_checkpoint(checkpoint)
    files = synth_files(work / "audio", args.files, args.duration_s)
    audio_s = args.files * args.duration_s
    print(f"machine: {machine()}; torch threads: {torch.get_num_threads()}")
    print(f"model: {which}")
    print(f"audio: {args.files} synthetic files x {args.duration_s:g} s = {audio_s:g} s (16 kHz FLAC)\n")

    # -- 1. offline throughput ------------------------------------------------------------------------
    estimate_file(files[0], model)  # warm-up: imports, mel matrix, first-call allocations
    baseline_file(files[0], model)
    ours = [estimate_file(p, model)["rr_bpm"] for p in files]
    theirs = [baseline_file(p, model) for p in files]
    agreement = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
    est_cpu = cpu_seconds(lambda: [estimate_file(p, model) for p in files], args.repeats)
    base_cpu = cpu_seconds(lambda: [baseline_file(p, model) for p in files], args.repeats)
    est_rt, base_rt = audio_s / est_cpu, audio_s / base_cpu
    print("## Offline estimation (decode -> features -> model -> aggregation), one thread")
    print(
        table(
            ["pipeline", "CPU s", "audio s per CPU s", "vs baseline"],
            [
                ["training.estimate", f"{est_cpu:.3f}", f"{est_rt:,.0f}x", f"{est_rt / base_rt:.1f}x"],
                ["librosa + per-window torch", f"{base_cpu:.3f}", f"{base_rt:,.0f}x", "1.0x"],
            ],
        )
    )
    verdict = "meets" if est_rt >= TARGET_REAL_TIME else "MISSES"
    print(f"target >= {TARGET_REAL_TIME:,.0f}x real time per core: {verdict} ({est_rt:,.0f}x)")
    print(f"recording rr_bpm, estimate vs baseline: max |difference| {agreement:.4f} breaths/min\n")
    print(breakdown(files, model, est_cpu, args.repeats) + "\n")

    # -- 2. streaming cost per 100 ms chunk -----------------------------------------------------------
    from coreml.cli import cost_summary
    from coreml.export import export_package

    package = work / "bench.mlpackage"
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):  # converter chatter
        warnings.simplefilter("ignore")
        export_package(package, checkpoint, "explicit", CHUNK_SAMPLES, "float32")
    import soundfile as sf

    stream_audio = sf.read(files[0], dtype="float32")[0]
    costs = {
        "torch, FFT front-end (StreamingLogMel) + forward_chunk": torch_chunk_cost(
            model, stream_audio, "fft"
        ),
        "torch, DFT-conv front-end (as in the package) + forward_chunk": torch_chunk_cost(
            model, stream_audio, "dft"
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
                [
                    "offline estimate, effective GMAC/s (package MACs/s of audio x measured rate)",
                    f"{macs_per_audio_s * est_rt / 1e9:.2f}",
                ],
            ],
        )
    )
    print(
        "\nnote: the offline path computes the DFT by FFT and runs the model over 6 s windows every 3 s "
        "(each frame twice), so its 'effective' rate counts the package's work, not the FFT's."
    )


if __name__ == "__main__":
    main()
