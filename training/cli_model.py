"""Model commands of ``python -m training`` (training, evaluation, the experiment grid).

python -m training train --data DIR [--data DIR ...] [--model tclstm|lstm] [--units 32] --out CKPT
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from training.config import TrainConfig


def _config_from(args: argparse.Namespace) -> TrainConfig:
    overrides = {"model_type": args.model, "units": args.units, "seed": args.seed}
    for name in ("epochs", "patience", "lr", "batch_size"):
        value = getattr(args, name, None)
        if value is not None:
            overrides["max_epochs" if name == "epochs" else name] = value
    return dataclasses.replace(TrainConfig(), **overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from training.train import train

    cfg = _config_from(args)
    summary = train(cfg, args.data, args.out, progress=not args.quiet)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2))
    print(
        f"wrote {args.out} (best epoch {summary['best_epoch']}, validation CCC of RR "
        f"{summary['val_ccc_rr']:.3f}, {summary['train_seconds']:.0f} s)"
    )
    return 0


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=["tclstm", "lstm"], default="tclstm")
    p.add_argument("--units", type=int, choices=[16, 32, 64], default=32)
    p.add_argument("--seed", type=int, default=0)
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
    from training.evaluate import evaluate

    report = evaluate(args.checkpoint, args.data, args.out, with_dsp=not args.no_dsp, progress=not args.quiet)
    print((Path(args.out) / "report.md").read_text())
    print(
        f"wrote {args.out}/report.md, report.json, predictions.csv, recordings.csv and "
        f"{sum(len(r.get('plots', {})) for r in report['runs'])} plots"
    )
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
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_evaluate)

    p = commands.add_parser("experiments", help="train and evaluate the paper's whole grid")
    p.add_argument("--data", action="append", type=Path, required=True, metavar="DIR")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--quick", action="store_true", help="few epochs: checks the pipeline, not the numbers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_experiments)
