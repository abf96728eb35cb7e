"""The ``python -m training`` command line (a contract: other tools and the README call it).

    python -m training data synth --out DIR --segments N --seed S
    python -m training data import rrujo|breathmy SRC --out DIR [--seed S] [--limit N] [--no-convert]
    python -m training data augment SRC --out DIR --copies K --seed S
    python -m training data stats DIR

Shape: :func:`build_parser` gives every command group a ``add_*_commands(subparsers)`` function, and
every command is a small ``cmd_*`` function taking the parsed arguments and returning the exit status.
A new group (``train``, ``evaluate``, ...) is one more ``add_*_commands`` call in :func:`build_parser`.
Heavy modules are imported inside the commands, so ``--help`` and ``data stats`` start fast.

Errors the user can fix (a missing folder, a bad manifest, unusable audio) print one ``error:`` line
to stderr and exit with status 2, like argparse's own usage errors; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from training.audio import AudioError
from training.importers import LAYOUTS, CorpusImportError, import_corpus
from training.manifest import MANIFEST_NAME, ManifestError, read_manifest

EXIT_USAGE = 2


class CommandError(Exception):
    """A problem with the command's arguments found before any work started (message says what)."""


# Errors reported as one line with exit status 2; extend with the error types of new commands.
USER_ERRORS: tuple[type[BaseException], ...] = (
    CommandError,
    ManifestError,
    AudioError,
    CorpusImportError,
    OSError,
    ValueError,  # bad checkpoints, front-end mismatches, unusable corpora: all name the problem
)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def existing_folder(path: Path, what: str) -> Path:
    if not path.exists():
        raise CommandError(f"{path}: no such folder ({what})")
    if not path.is_dir():
        raise CommandError(f"{path}: not a folder ({what})")
    return path


def _corpus_line(out_dir: Path, started: float) -> str:
    segments = read_manifest(out_dir)
    hours = sum(s.duration_s for s in segments) / 3600
    return (
        f"{len(segments)} segments ({hours:.2f} h) in {out_dir / MANIFEST_NAME} "
        f"[{time.perf_counter() - started:.1f} s]"
    )


# --- data -----------------------------------------------------------------------------------------


def cmd_data_synth(args: argparse.Namespace) -> int:
    from training.synth import build_synthetic_corpus

    started = time.perf_counter()
    build_synthetic_corpus(args.out, args.segments, args.seed, progress=True)
    print(_corpus_line(args.out, started))
    return 0


def cmd_data_import(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    report = import_corpus(
        args.layout,
        existing_folder(args.src, f"the {args.layout} corpus to import"),
        args.out,
        seed=args.seed,
        limit=args.limit,
        convert=args.convert,
        progress=True,
    )
    print(report.summary())
    print(f"[{time.perf_counter() - started:.1f} s]")
    return 0


def cmd_data_augment(args: argparse.Namespace) -> int:
    from training.augment import augment_corpus

    started = time.perf_counter()
    src = existing_folder(args.src, "the corpus to augment")
    augment_corpus(src, args.out, args.copies, args.seed, progress=True)
    print(_corpus_line(args.out, started))
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from training.corpus_stats import HISTOGRAM_NAME, corpus_stats, format_stats, save_rr_histogram

    corpus = existing_folder(args.dir, "the corpus")
    segments = read_manifest(corpus)
    print(f"corpus: {corpus}")
    print(format_stats(corpus_stats(segments)))
    png = save_rr_histogram(segments, corpus / HISTOGRAM_NAME, title=f"RR distribution: {corpus.name}")
    print(f"histogram: {png}")
    return 0


def cmd_data_realism(args: argparse.Namespace) -> int:
    import json

    from training.realism import compare

    rrujo = existing_folder(args.rrujo, "the RRuJO recordings")
    results = compare(rrujo, args.out, seed=args.seed)
    for name, r in results.items():
        print(
            f"{name:36s} cycle depth {r['depth_db_median']:5.1f} dB "
            f"(IQR {r['depth_db_iqr'][0]:.1f}-{r['depth_db_iqr'][1]:.1f}), "
            f"mean profile range {r['profile_range_db']:.1f} dB ({r['recordings']} recordings)"
        )
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(f"figure: {args.out}")
    return 0


def add_data_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="build, import, augment and inspect corpora")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    synth = sub.add_parser("synth", help="generate a synthetic breath corpus")
    synth.add_argument("--out", type=Path, required=True, help="corpus folder to write")
    synth.add_argument("--segments", type=positive_int, default=3000, help="number of segments (3000)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (0)")
    synth.set_defaults(run=cmd_data_synth)

    imp = sub.add_parser("import", help="import a real corpus into the manifest format")
    imp.add_argument("layout", choices=sorted(LAYOUTS), help="the corpus layout")
    imp.add_argument("src", type=Path, help="the corpus as downloaded (read only)")
    imp.add_argument("--out", type=Path, required=True, help="corpus folder to write")
    imp.add_argument("--seed", type=int, default=0, help="seed of the segmentation and splits (0)")
    imp.add_argument("--limit", type=positive_int, help="import only the first N recordings")
    imp.add_argument(
        "--no-convert",
        dest="convert",
        action="store_false",
        help="point at the original files instead of writing 16 kHz FLAC copies under OUT/audio",
    )
    imp.set_defaults(run=cmd_data_import)

    aug = sub.add_parser("augment", help="add background noise copies of a corpus' training split")
    aug.add_argument("src", type=Path, help="corpus folder to augment")
    aug.add_argument("--out", type=Path, required=True, help="corpus folder to write")
    aug.add_argument("--copies", type=positive_int, default=1, help="noisy copies per segment (1)")
    aug.add_argument("--seed", type=int, default=0, help="random seed (0)")
    aug.set_defaults(run=cmd_data_augment)

    realism = sub.add_parser("realism", help="breath-cycle loudness: the generator beside RRuJO (figure)")
    realism.add_argument("--rrujo", type=Path, required=True, help="the RRuJO folder (recordings.csv)")
    realism.add_argument("--out", type=Path, required=True, help="figure to write (PNG; numbers beside it)")
    realism.add_argument("--seed", type=int, default=0, help="random seed of the generated side (0)")
    realism.set_defaults(run=cmd_data_realism)

    stats = sub.add_parser("stats", help="print label counts and save the RR histogram")
    stats.add_argument("dir", type=Path, help="corpus folder (holding manifest.csv)")
    stats.set_defaults(run=cmd_data_stats)


# --- entry point ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Respira training toolkit: corpora, models and evaluation.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_data_commands(commands)
    from training.cli_model import add_model_commands

    add_model_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 2 usage or input error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        status: int = args.run(args)
        return status
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
