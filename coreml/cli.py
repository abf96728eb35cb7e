"""Command line of the Core ML tools.

    python -m coreml export [--checkpoint CKPT] --out PATH.mlpackage [--variant explicit|stateful]
                            [--chunk-samples 1600] [--precision float32|float16] [--window-s 30]
    python -m coreml verify PATH.mlpackage --audio FILE... [--checkpoint CKPT] [--min-seconds 60] [--json]
    python -m coreml vectors PATH.mlpackage --audio FILE --out DIR [--checkpoint CKPT] [--seconds 10]
    python -m coreml cost PATH.mlpackage [--json]

Errors in the input (a bad checkpoint, a package with an unknown op, audio that cannot be decoded) print
one line naming the problem and exit with status 2; a verification outside tolerance exits with 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coreml.verify import FileResult  # (imported when run: the CLI starts without torch)

MIN_STREAM_S = 60.0  # coreml.verify.MIN_STREAM_S (not imported: the CLI starts without torch)


def _export(args: argparse.Namespace) -> int:
    from coreml.export import export_package

    out = export_package(
        args.out, args.checkpoint, args.variant, args.chunk_samples, args.precision, args.window_s
    )
    print(f"wrote {out} ({args.variant}, {args.precision}, {args.chunk_samples}-sample chunks)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from coreml.verify import format_table, verify

    results, info = verify(args.package, args.audio, args.checkpoint, min_seconds=args.min_seconds)
    if args.json:
        print(json.dumps({"info": info, "files": [_result_dict(r) for r in results]}, indent=2))
    else:
        print(format_table(results, info))
    failed = [r for r in results if not r.passed]
    print(
        f"\n{len(results) - len(failed)} of {len(results)} files within tolerance",
        file=sys.stderr if args.json else sys.stdout,
    )
    for r in failed:
        print(f"FAIL {r.path}: {', '.join(r.failures())}", file=sys.stderr if args.json else sys.stdout)
    return 1 if failed else 0


def _result_dict(result: FileResult) -> dict[str, Any]:
    import dataclasses
    import math

    def clean(value: object) -> object:
        return value if not isinstance(value, float) or math.isfinite(value) else str(value)

    def checks(items: Sequence[Any]) -> list[dict[str, Any]]:
        return [
            {**{k: clean(v) for k, v in dataclasses.asdict(c).items()}, "passed": c.passed} for c in items
        ]

    return {
        "path": result.path,
        "seconds_streamed": result.seconds_streamed,
        "chunks": result.chunks,
        "plays": result.plays,
        "passed": result.passed,
        "checks": checks(result.checks),
        "coreml_checks": None if result.coreml_checks is None else checks(result.coreml_checks),
    }


def _vectors(args: argparse.Namespace) -> int:
    from coreml.vectors import write_vectors

    summary = write_vectors(args.package, args.audio, args.out, args.checkpoint, seconds=args.seconds)
    print(
        f"wrote {summary['chunks']} chunks ({summary['seconds']:.1f} s) of input and expected outputs and "
        f"states to {args.out} (vectors.json + raw little-endian float32 files)"
    )
    return 0


def cost_summary(package_path: str) -> dict:
    """The cost report plus per-second figures and the model's own parameter count (from metadata)."""
    from coreml.cost import cost_report
    from coreml.package import read_package
    from training.frontend import SAMPLE_RATE_HZ

    package = read_package(package_path)
    report = cost_report(package).as_dict()
    meta = package.metadata.user_defined
    chunk = int(meta.get("respira.chunk_samples", 1600))
    report["chunk_samples"] = chunk
    report["calls_per_second"] = SAMPLE_RATE_HZ / chunk
    report["multiply_adds_per_second_of_audio"] = round(report["multiply_adds"] * SAMPLE_RATE_HZ / chunk)
    model = json.loads(meta.get("respira.model", "{}"))
    report["model_parameters"] = model.get("parameters")
    return report


def _cost(args: argparse.Namespace) -> int:
    report = cost_summary(args.package)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"package:                 {args.package}")
    print(
        f"size on disk:            {report['package_bytes'] / 1024:.0f} KiB "
        f"(weights file {report['weight_file_bytes'] / 1024:.0f} KiB)"
    )
    print(
        f"weights in the graph:    {report['n_weights']:,} "
        f"(model parameters {report['model_parameters']:,}; the rest: the front-end's and the DSP's DFT, "
        "the mel and band matrices, the estimator's constants)"
    )
    print(
        f"multiply-adds:           {report['multiply_adds']:,} per call of "
        f"{report['chunk_samples']} samples, "
        f"{report['multiply_adds_per_second_of_audio']:,} per second of audio"
    )
    print("ops (without const):     " + ", ".join(f"{k} {v}" for k, v in report["op_histogram"].items()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coreml", description="Core ML export and checks.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="convert a checkpoint to a streaming .mlpackage")
    p.add_argument("--checkpoint", help="checkpoint (default: the model shipped in the package)")
    p.add_argument("--out", required=True, help="output path, ending in .mlpackage")
    p.add_argument("--variant", choices=["explicit", "stateful"], default="explicit")
    p.add_argument(
        "--chunk-samples", type=int, default=1600, help="samples per call (a multiple of 800: 50 ms)"
    )
    p.add_argument("--precision", choices=["float32", "float16"], default="float32")
    p.add_argument(
        "--window-s",
        type=float,
        default=None,
        help="the rolling window in seconds, 15-60 (default: the checkpoint's estimator's, 30)",
    )
    p.set_defaults(run=_export)

    p = sub.add_parser("verify", help="stream audio through a package with the interpreter, compare to torch")
    p.add_argument("package")
    p.add_argument("--audio", nargs="+", required=True, metavar="FILE")
    p.add_argument("--checkpoint", help="the checkpoint the package was exported from (default: shipped)")
    p.add_argument(
        "--min-seconds",
        type=float,
        default=MIN_STREAM_S,
        help="stream at least this long per file (looped if shorter)",
    )
    p.add_argument("--json", action="store_true", help="every check as JSON on stdout")
    p.set_defaults(run=_verify)

    p = sub.add_parser("vectors", help="test vectors for a Swift XCTest: chunks, expected outputs and states")
    p.add_argument("package")
    p.add_argument("--audio", required=True, metavar="FILE")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--checkpoint", help="the checkpoint the package was exported from (default: shipped)")
    p.add_argument("--seconds", type=float, default=10.0, help="audio to stream (looped if shorter)")
    p.set_defaults(run=_vectors)

    p = sub.add_parser("cost", help="parameters, size on disk, op histogram, multiply-adds per second")
    p.add_argument("package")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_cost)

    args = parser.parse_args(argv)
    if args.command in ("verify", "vectors"):
        import torch

        # torch runs one 100 ms chunk at a time here: a second thread only contends for the cores
        # (measured on a busy 2-core machine: torch's lstm took 41 ms per chunk with two threads)
        torch.set_num_threads(1)
    from coreml.export import ExportError
    from coreml.interpreter import InterpreterError
    from coreml.package import PackageError
    from coreml.verify import VerifyError
    from training.audio import AudioError
    from training.checkpoint import CheckpointError

    try:
        status: int = args.run(args)
        return status
    except (
        ExportError,
        VerifyError,
        PackageError,
        InterpreterError,
        AudioError,
        CheckpointError,
        ValueError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
