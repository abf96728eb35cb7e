"""Model commands of ``python -m training`` (training, evaluation, the experiment grid).

python -m training train --data DIR [--data DIR ...] [--recipe ours|paper] [--set FIELD=VALUE ...] --out CKPT

``--set`` reaches every field of :class:`training.config.TrainConfig` (``--set frame_stride=1
--set lr_schedule=constant``); values are parsed as JSON where they can be (numbers, true/false,
lists), as text otherwise. The shortcut options (``--model``, ``--units``, ``--epochs``, ...) are the
same fields under friendlier names.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from training.config import TrainConfig


def parse_setting(text: str) -> tuple[str, object]:
    """``FIELD=VALUE`` -> (field, value) for a :class:`TrainConfig` field; the value as JSON if it is."""
    name, sep, raw = text.partition("=")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if not sep or name not in fields:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(fields))}"
        )
    try:
        value: object = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name, value


def _config_from(args: argparse.Namespace) -> TrainConfig:
    overrides: dict[str, Any] = {}
    for name in ("model", "units", "seed", "epochs", "patience", "lr", "batch_size"):
        value = getattr(args, name, None)
        if value is not None:
            field = {"model": "model_type", "epochs": "max_epochs"}.get(name, name)
            overrides[field] = value
    overrides.update(dict(getattr(args, "settings", None) or []))
    base = TrainConfig.paper() if getattr(args, "recipe", "ours") == "paper" else TrainConfig()
    try:
        return dataclasses.replace(base, **overrides)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid training settings: {exc}") from exc


def cmd_train(args: argparse.Namespace) -> int:
    from training.train import train

    cfg = _config_from(args)
    summary = train(cfg, args.data, args.out, progress=not args.quiet)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))
    phase = summary.get("val_phase_mae_bpm")
    print(
        f"wrote {args.out} (best epoch {summary['best_epoch']}, validation CCC of RR "
        f"{summary['val_ccc_rr']:.3f}"
        + (f", validation phase-rate MAE {phase:.2f} breaths/min" if phase is not None else "")
        + f", {summary['train_seconds']:.0f} s)"
    )
    return 0


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--recipe", choices=["ours", "paper"], default="ours", help="defaults to start from (ours)"
    )
    p.add_argument("--model", choices=["tclstm", "lstm"])
    p.add_argument("--units", type=int, choices=[16, 32, 64])
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        type=parse_setting,
        metavar="FIELD=VALUE",
        help="any TrainConfig field, e.g. --set frame_stride=1; repeat for several",
    )
    p.add_argument("--epochs", type=int, help=f"at most this many epochs (default {TrainConfig.max_epochs})")
    p.add_argument("--patience", type=int, help=f"early stopping patience (default {TrainConfig.patience})")
    p.add_argument("--lr", type=float, help=f"Adam learning rate (default {TrainConfig.lr})")
    p.add_argument("--batch-size", type=int, help=f"batch size (default {TrainConfig.batch_size})")


def add_model_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="train a model on corpora (their train/val splits)")
    p.add_argument(
        "--data",
        action="append",
        type=Path,
        required=True,
        metavar="DIR",
        help="corpus folder with manifest.csv; repeat to train on several",
    )
    p.add_argument("--out", type=Path, required=True, metavar="CKPT", help="checkpoint to write")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    add_model_options(p)
    p.set_defaults(run=cmd_train)
    add_evaluation_commands(commands)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    import torch

    from training.evaluate import evaluate
    from training.recording_report import recording_report

    # The estimator runs the model 100 ms at a time, as the package does (training.estimator.phase_track):
    # ops that small gain nothing from a second thread, which only waits for a busy core (measured on
    # the 2-core machine with a test worker beside it: the quick demo's evaluation took over 10 minutes
    # with two threads)
    torch.set_num_threads(1)

    out = Path(args.out)
    recordings = (args.checkpoint, args.data, out)
    options = {"split": args.split, "noise_dir": args.noise_dir}
    if args.recordings_only:
        recording_report(*recordings, **options)
    else:
        # The two halves share nothing but the inputs (they write different files): the recordings'
        # section runs in a second process while this one writes the segment report, one core each.
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            beside = pool.submit(recording_report, *recordings, **options)
            report = evaluate(*recordings, with_dsp=not args.no_dsp, progress=not args.quiet)
            beside.result()
        print((out / "report.md").read_text())
        print(
            f"wrote {out}/report.md, report.json, predictions.csv, recordings.csv and "
            f"{sum(len(r.get('plots', {})) for r in report['runs'])} plots"
        )
    print((out / "recordings.md").read_text())
    print(f"wrote {out}/recordings.md, recordings.json and rolling_window_error.png")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from training.train import recalibrate

    for checkpoint in args.checkpoint:
        calibration = recalibrate(checkpoint, args.data)
        print(f"{checkpoint}: {json.dumps(calibration)}")
    return 0


def cmd_experiments(args: argparse.Namespace) -> int:
    from training.experiments import run_experiments

    run_experiments(args.data, args.out, quick=args.quick, seed=args.seed, progress=not args.quiet)
    print(f"report: {args.out}/report/report.md")
    return 0


def add_evaluation_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("evaluate", help="the paper's tables, breakdowns and plots for checkpoints")
    p.add_argument(
        "--checkpoint",
        action="append",
        type=Path,
        required=True,
        metavar="CKPT",
        help="checkpoint to evaluate; repeat to compare several in one report",
    )
    p.add_argument(
        "--data",
        action="append",
        type=Path,
        required=True,
        metavar="DIR",
        help="corpus folder; its val and test splits are evaluated; repeat for several",
    )
    p.add_argument("--out", type=Path, required=True, metavar="REPORT_DIR")
    p.add_argument("--no-dsp", action="store_true", help="leave out the DSP baseline")
    p.add_argument(
        "--recordings-only",
        action="store_true",
        help="only the recording-level section (the estimator, the DSP and the segment heads per recording)",
    )
    p.add_argument("--split", choices=["val", "test"], default="test", help="recording-level split (test)")
    p.add_argument(
        "--noise-dir", type=Path, help="real noise recordings (default ../shared/data/noise; none: left out)"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_evaluate)

    p = commands.add_parser(
        "calibrate", help="choose a checkpoint's estimator settings again on the validation recordings"
    )
    p.add_argument("--checkpoint", action="append", type=Path, required=True, metavar="CKPT")
    p.add_argument("--data", action="append", type=Path, required=True, metavar="DIR")
    p.set_defaults(run=cmd_calibrate)

    p = commands.add_parser("experiments", help="train and evaluate the paper's whole grid")
    p.add_argument("--data", action="append", type=Path, required=True, metavar="DIR")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--quick", action="store_true", help="few epochs: checks the pipeline, not the numbers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_experiments)
