"""The report's recording-level section: per source, each method, over several seeds with their spread.

``python -m training evaluate`` writes it as ``recordings.md``, ``recordings.json`` and
``rolling_window_error.png`` beside the paper's tables. Checkpoints given together are treated as seeds
of one recipe: each row shows the mean over seeds and, after ±, the standard deviation between seeds
(the DSP baseline has no seed). The estimator of each checkpoint uses the settings calibrated for it on
validation data (stored in the checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROLLING_WINDOWS_S = (15.0, 20.0, 30.0, 45.0, 60.0)
METHODS = ("estimator", "DSP baseline", "segment heads")


@dataclasses.dataclass
class SeedResult:
    checkpoint: str
    table: dict  # group -> method -> metrics (training.recording_eval.summarise)
    rolling_mae: dict[float, float]  # window -> MAE of the rolling rate on steady real recordings
    rolling_vs_whole: float  # share of 30 s rolling rates within 1 breath/min of the recording's rate
    estimator: dict


def _one_seed(checkpoint: str, corpus_dirs: Sequence[str], split: str, noise_dir: str | None) -> SeedResult:
    import torch

    from training.checkpoint import load_checkpoint
    from training.estimator import EstimatorConfig, decide, phase_tracks
    from training.real_noise import load_noise_bank
    from training.recording_eval import evaluation_set, method_answers, recording_evidence, rolling_errors

    torch.set_num_threads(1)
    model, meta = load_checkpoint(checkpoint)
    cfg = EstimatorConfig.from_dict(meta.get("estimator", {}))
    recordings = evaluation_set(
        corpus_dirs, split, load_noise_bank("test" if split == "test" else "val", noise_dir)
    )
    answers = []
    rolling: dict[float, list[float]] = {w: [] for w in ROLLING_WINDOWS_S}
    agree: list[bool] = []
    # once per recording, in batches (the costly part), shared below
    tracks = phase_tracks(model, [rec.audio for rec in recordings])
    for rec, track in zip(recordings, tracks, strict=True):
        evidence = recording_evidence(rec, model, track=track)
        answers.append((rec, method_answers(evidence, cfg)))
        if rec.steady and rec.group.startswith("RRuJO"):
            for w, errors in rolling_errors(rec, model, cfg, ROLLING_WINDOWS_S, track=track).items():
                rolling[w].extend(errors)
            whole = decide(evidence.whole, cfg).rr_bpm
            if whole is not None:
                rates = rolling_errors(
                    dataclasses.replace(rec, rr_bpm=whole), model, cfg, (30.0,), track=track
                )[30.0]
                agree.extend(e <= 1.0 for e in rates)
    from training.recording_eval import summarise

    return SeedResult(
        checkpoint=str(checkpoint),
        table=summarise(answers),
        rolling_mae={w: float(np.mean(e)) if e else math.nan for w, e in rolling.items()},
        rolling_vs_whole=float(np.mean(agree)) if agree else math.nan,
        estimator=cfg.to_dict(),
    )


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def _pair(pair: Sequence[float]) -> tuple[float, float]:
    """A (mean, sd) pair as stored in the combined JSON (a list after a round trip)."""
    mean, sd = pair
    return mean, sd


def _fmt(mean: float, sd: float, digits: int = 2, seeds: int = 1) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if seeds > 1 else f"{mean:.{digits}f}"


def combine(results: Sequence[SeedResult]) -> dict:
    groups = sorted({g for r in results for g in r.table})
    rows = []
    for group in groups:
        row: dict = {"group": group, "n": results[0].table[group]["estimator"]["n"]}
        for method in METHODS:
            entries = [r.table[group][method] for r in results if group in r.table]
            for key in ("mae_bpm", "within_1_bpm", "answered", "false_rate_share", "no_breathing_share"):
                if key in entries[0]:
                    row[f"{method}/{key}"] = _mean_sd([e[key] for e in entries])
        rows.append(row)
    return {
        "seeds": len(results),
        "checkpoints": [r.checkpoint for r in results],
        "estimators": [r.estimator for r in results],
        "rows": rows,
        "rolling_mae_bpm": {str(w): _mean_sd([r.rolling_mae[w] for r in results]) for w in ROLLING_WINDOWS_S},
        "rolling_30s_within_1_bpm_of_whole": _mean_sd([r.rolling_vs_whole for r in results]),
    }


def markdown(combined: dict, split: str) -> str:
    seeds = combined["seeds"]
    lines = [
        f"## Recording level ({split} split; {seeds} seed{'s' if seeds > 1 else ''}, "
        "mean ± sd between seeds)",
        "",
        "Breathing rows: mean absolute error in breaths/min over the recordings that got a number, and the",
        "share that got one. No-breath rows: the share given a rate (a false rate). The DSP baseline is",
        "deterministic (no ±).",
        "",
        "| recordings | n | estimator MAE | answered | DSP MAE | DSP answered | segment heads MAE |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in combined["rows"]:
        cells = {
            (method, key): _fmt(
                *_pair(row.get(f"{method}/{key}", (math.nan, math.nan))),
                seeds=seeds if method != "DSP baseline" else 1,
            )
            for method in METHODS
            for key in ("mae_bpm", "answered", "false_rate_share")
        }
        if "estimator/false_rate_share" in row:
            lines.append(
                f"| {row['group']} | {row['n']} | false rates {cells['estimator', 'false_rate_share']} | | "
                f"false rates {cells['DSP baseline', 'false_rate_share']} | | "
                f"false rates {cells['segment heads', 'false_rate_share']} |"
            )
        else:
            lines.append(
                f"| {row['group']} | {row['n']} | {cells['estimator', 'mae_bpm']} "
                f"| {cells['estimator', 'answered']} | {cells['DSP baseline', 'mae_bpm']} "
                f"| {cells['DSP baseline', 'answered']} | {cells['segment heads', 'mae_bpm']} |"
            )
    lines += [
        "",
        "Rolling rate on steady real recordings (RRuJO): MAE against the paced rate by window length.",
        "",
    ]
    lines += ["| window (s) | " + " | ".join(combined["rolling_mae_bpm"]) + " |"]
    lines += ["|---|" + "---|" * len(combined["rolling_mae_bpm"])]
    lines += [
        "| MAE (breaths/min) | "
        + " | ".join(_fmt(*_pair(v), seeds=seeds) for v in combined["rolling_mae_bpm"].values())
        + " |"
    ]
    mean, sd = combined["rolling_30s_within_1_bpm_of_whole"]
    lines += [
        "",
        f"30 s rolling rates within 1 breath/min of the whole-recording rate: {_fmt(mean, sd, 3, seeds)}",
        "",
    ]
    return "\n".join(lines)


def plot_rolling(combined: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = [float(w) for w in combined["rolling_mae_bpm"]]
    means = [v[0] for v in combined["rolling_mae_bpm"].values()]
    sds = [v[1] for v in combined["rolling_mae_bpm"].values()]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.errorbar(windows, means, yerr=sds, marker="o", capsize=3)
    ax.set_xlabel("rolling window (s)")
    ax.set_ylabel("MAE (breaths/min)")
    ax.set_title("Rolling rate vs window length (RRuJO, steady)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def recording_report(
    checkpoints: Sequence[Path | str],
    corpus_dirs: Sequence[Path | str],
    out_dir: Path | str,
    split: str = "test",
    noise_dir: Path | str | None = None,
    workers: int | None = None,
) -> dict:
    """Evaluate each checkpoint (a process each, up to ``workers``) and write the section's files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    args = [
        (str(c), [str(d) for d in corpus_dirs], split, None if noise_dir is None else str(noise_dir))
        for c in checkpoints
    ]
    workers = workers or min(len(args), 4)
    if workers <= 1:
        results = [_one_seed(*a) for a in args]
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_one_seed, *zip(*args, strict=True)))
    combined = combine(results)
    combined["per_seed"] = [dataclasses.asdict(r) for r in results]
    (out / "recordings.json").write_text(json.dumps(combined, indent=1, default=str))
    (out / "recordings.md").write_text(markdown(combined, split))
    plot_rolling(combined, out / "rolling_window_error.png")
    return combined
