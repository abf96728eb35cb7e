"""The evaluation report: predictions in, the paper's tables (and ours) out as Markdown, JSON, CSV and PNG.

Call::

    from training.report import PredictionRow, RunPredictions, write_report

    rows = [PredictionRow.from_segment(seg, rr_pred_bpm=..., rc_pred=..., breath_probs=(p0, p1, p2),
                                       noise_prob=...) for seg in test_segments]
    run = RunPredictions(name="TC-LSTM-32", model_type="tclstm", units=32, augmented=True,
                         split="test", rows=rows)
    summary = write_report([run, ...], "reports/eval", rr_norm=(train_rr_mean, train_rr_std))

A *run* is one model's predictions on one split. Runs are identified by ``name``: evaluate a checkpoint
on ``val`` and on ``test`` under the same name and Table I shows both columns for it. DSP runs
(``model_type="dsp"``, see :func:`training.dsp_baseline.dsp_run`) carry only ``rr_pred_bpm``.
``rr_norm`` is the TRAINING labels' RR mean and standard deviation, used for the z-normalised MSE.

Written to ``out_dir``:
- ``report.md``: Table I (by model size: CCC and Pearson of RR, macro F1 of breath and noise classes, on
  the validation and evaluation = test sets), Table II (LSTM vs TC-LSTM vs DSP on the evaluation set:
  CCC, Pearson, MSE on z-normalised RR, MAE and RMSE in breaths/min, F1 breath), Table III (MSE on
  z-normalised RR per true-RR range <15, 15-25, >25, with and without augmentation), breakdowns per
  gender, stage, SNR band and source, recording-level results, Bland-Altman statistics, the plots,
  and what is missing from each table (a single checkpoint gives one-row tables; nothing is invented).
- ``report.json``: every number above (``nan`` written as ``null``), under ``runs[i]`` and ``tables``.
- ``predictions.csv`` (one row per run and segment) and ``recordings.csv`` (one row per run and
  recording), for reproducing any number.
- ``scatter_<run>_<split>.png`` and ``bland_altman_<run>_<split>.png`` per run.

Breakdowns and tables use the evaluation (test) split when any run has one, else validation.
Recording level: rows sharing a ``recording`` id form a recording; its predicted rate is the median of
its segments' predictions (or, when a run supplies ``recording_rr_pred_bpm``, that whole-recording
estimate, as the DSP baseline does, since autocorrelation needs more than one 4-7 s window to see a
slow period), its true rate the median of its segments' labels. Segments whose prediction is missing
(``nan``: audio the DSP could not use) are left out of every number and counted as ``n_missing_pred``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from training import metrics
from training.manifest import BREATH_CLASSES, COLUMNS, Segment

MODEL_TYPES = ("tclstm", "lstm", "dsp")
REPORT_SPLITS = ("val", "test")
PAPER_UNITS = (16, 32, 64)  # Table I of the paper compares these sizes
NOISE_THRESHOLD = 0.5
MODEL_NAMES = {"tclstm": "TC-LSTM", "lstm": "LSTM", "dsp": "DSP"}
SNR_BANDS = ("clean", "30-40", "20-30", "10-20", "<10", ">40", "noisy, SNR unknown")


@dataclasses.dataclass
class PredictionRow(Segment):
    """One segment: its labels and metadata (the manifest's :class:`Segment` fields) and predictions.

    ``breath_probs`` are the probabilities of ``BREATH_CLASSES`` (none, normal, heavy) in that order;
    ``noise_prob`` the probability that the segment is noisy. Only ``rr_pred_bpm`` is required.
    """

    rr_pred_bpm: float = math.nan
    rc_pred: float | None = None
    breath_probs: tuple[float, float, float] | None = None
    noise_prob: float | None = None

    @classmethod
    def from_segment(
        cls,
        segment: Segment,
        rr_pred_bpm: float,
        rc_pred: float | None = None,
        breath_probs: Sequence[float] | None = None,
        noise_prob: float | None = None,
    ) -> PredictionRow:
        probs = None
        if breath_probs is not None:
            if len(breath_probs) != len(BREATH_CLASSES):
                raise ValueError(f"breath_probs needs {len(BREATH_CLASSES)} values, not {len(breath_probs)}")
            none, normal, heavy = (float(p) for p in breath_probs)
            probs = (none, normal, heavy)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(
            **{k: v for k, v in dataclasses.asdict(segment).items() if k in known},
            rr_pred_bpm=float(rr_pred_bpm),
            rc_pred=None if rc_pred is None else float(rc_pred),
            breath_probs=probs,
            noise_prob=None if noise_prob is None else float(noise_prob),
        )


@dataclasses.dataclass
class RunPredictions:
    """One model's predictions on one split. ``units`` is None for the DSP baseline.

    ``recording_rr_pred_bpm`` optionally maps recording id -> the run's own whole-recording estimate,
    used instead of the median of segment predictions at recording level.
    """

    name: str
    model_type: str
    units: int | None
    augmented: bool
    split: str
    rows: list[PredictionRow]
    recording_rr_pred_bpm: dict[str, float] | None = None

    @property
    def label(self) -> str:
        return f"{self.name} [{self.split}]"


def snr_band(snr_db: float | None, noisy: int = 0) -> str:
    """The SNR band of a segment: clean (no added noise), 30-40, 20-30, 10-20 dB, or outside those."""
    if snr_db is None or (isinstance(snr_db, float) and math.isnan(snr_db)):
        return "noisy, SNR unknown" if noisy else "clean"
    if snr_db > 40.0:
        return ">40"
    if snr_db >= 30.0:
        return "30-40"
    if snr_db >= 20.0:
        return "20-30"
    return "10-20" if snr_db >= 10.0 else "<10"


BREAKDOWNS: dict[str, Callable[[PredictionRow], str]] = {
    "gender": lambda r: r.gender or "unknown",
    "stage": lambda r: str(r.stage) if r.stage is not None else "none",
    "snr_band": lambda r: snr_band(r.snr_db, r.noisy),
    "source": lambda r: r.source or "unknown",
}


# ----------------------------------------------------------------------------------------------------
# Numbers


def _validate(runs: Sequence[RunPredictions], rr_norm: tuple[float, float]) -> None:
    if len(rr_norm) != 2 or not (math.isfinite(rr_norm[1]) and rr_norm[1] > 0):
        raise ValueError(f"rr_norm must be (training RR mean, positive std), not {rr_norm!r}")
    seen: dict[tuple[str, str], int] = {}
    config_of: dict[str, tuple] = {}
    for i, run in enumerate(runs):
        where = f"run {i} ({run.name!r})"
        if run.model_type not in MODEL_TYPES:
            raise ValueError(f"{where}: model_type {run.model_type!r} not one of {MODEL_TYPES}")
        if run.split not in REPORT_SPLITS:
            raise ValueError(f"{where}: split {run.split!r} not one of {REPORT_SPLITS}")
        if (run.name, run.split) in seen:
            raise ValueError(f"{where}: a run named {run.name!r} on {run.split!r} is given twice")
        seen[(run.name, run.split)] = i
        config = (run.model_type, run.units, run.augmented)
        if config_of.setdefault(run.name, config) != config:
            raise ValueError(f"{where}: runs named {run.name!r} disagree on model_type/units/augmented")
        for j, row in enumerate(run.rows):
            try:
                float(row.rr_pred_bpm)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{where}, row {j}: rr_pred_bpm {row.rr_pred_bpm!r} is not a number"
                ) from None
            if row.breath_probs is not None and len(row.breath_probs) != len(BREATH_CLASSES):
                raise ValueError(f"{where}, row {j}: breath_probs needs {len(BREATH_CLASSES)} values")
            if row.breath_class not in BREATH_CLASSES:
                raise ValueError(f"{where}, row {j}: breath_class {row.breath_class!r} unknown")


def _classification(rows: Sequence[PredictionRow]) -> dict:
    """Macro F1 and confusion matrices where the run predicts classes (absent keys otherwise)."""
    out: dict = {}
    breath = [(r.breath_class, r.breath_probs) for r in rows if r.breath_probs is not None]
    if breath:
        true = np.array([BREATH_CLASSES.index(label) for label, _ in breath])
        pred = np.array([int(np.argmax(probs)) for _, probs in breath])
        cm = metrics.confusion_matrix(true, pred, len(BREATH_CLASSES))
        out["f1_breath"] = metrics.macro_f1(true, pred, len(BREATH_CLASSES))
        out["f1_breath_per_class"] = dict(zip(BREATH_CLASSES, metrics.f1_per_class(cm).tolist(), strict=True))
        out["confusion_breath"] = cm.tolist()
    noise = [(r.noisy, r.noise_prob) for r in rows if r.noise_prob is not None]
    if noise:
        true = np.array([int(noisy) for noisy, _ in noise])
        pred = np.array([int(prob >= NOISE_THRESHOLD) for _, prob in noise])
        out["f1_noise"] = metrics.macro_f1(true, pred, 2)
        out["confusion_noise"] = metrics.confusion_matrix(true, pred, 2).tolist()
    return out


def _segment_metrics(rows: Sequence[PredictionRow], rr_norm: tuple[float, float]) -> dict:
    """Regression (on rows with a prediction) and classification numbers of a set of rows."""
    valid = [r for r in rows if math.isfinite(r.rr_pred_bpm)]
    true = np.array([r.rr_bpm for r in valid], dtype=np.float64)
    pred = np.array([r.rr_pred_bpm for r in valid], dtype=np.float64)
    out = metrics.regression_summary(true, pred, *rr_norm)
    out["n_missing_pred"] = len(rows) - len(valid)
    out.update(_classification(rows))
    return out


def _recording_level(run: RunPredictions) -> dict:
    """Per-recording true and predicted rates, and MAE/RMSE/bias/CCC over recordings, by source."""
    groups: dict[str, list[PredictionRow]] = {}
    for row in run.rows:
        if row.recording:
            groups.setdefault(row.recording, []).append(row)
    own = run.recording_rr_pred_bpm or {}
    recordings: list[dict[str, Any]] = []
    for rec_id, rows in sorted(groups.items()):
        preds = [r.rr_pred_bpm for r in rows if math.isfinite(r.rr_pred_bpm)]
        pred = own.get(rec_id, float(np.median(preds)) if preds else math.nan)
        recordings.append(
            {
                "recording": rec_id,
                "source": rows[0].source or "unknown",
                "participant": rows[0].participant,
                "n_segments": len(rows),
                "rr_true_bpm": float(np.median([r.rr_bpm for r in rows])),
                "rr_pred_bpm": float(pred),
            }
        )
    method = "run's whole-recording estimate" if own else "median of segment predictions"
    out: dict = {"method": method, "recordings": recordings, "by_source": {}}
    sources = sorted({r["source"] for r in recordings})
    for source in ["all", *sources]:
        chosen = [r for r in recordings if source == "all" or r["source"] == source]
        out["by_source"][source] = _recording_summary(chosen)
    return out


def _recording_summary(recordings: Sequence[dict]) -> dict:
    valid = [r for r in recordings if math.isfinite(r["rr_pred_bpm"])]
    true = np.array([r["rr_true_bpm"] for r in valid])
    pred = np.array([r["rr_pred_bpm"] for r in valid])
    return {
        "n_recordings": len(valid),
        "n_missing_pred": len(recordings) - len(valid),
        "mae_bpm": metrics.mae(true, pred),
        "rmse_bpm": metrics.rmse(true, pred),
        "bias_bpm": metrics.bland_altman(true, pred).bias,
        "ccc": metrics.ccc(true, pred),
    }


def run_metrics(run: RunPredictions, rr_norm: tuple[float, float]) -> dict:
    """Every number of one run (the ``runs[i]`` entry of report.json)."""
    valid = [r for r in run.rows if math.isfinite(r.rr_pred_bpm)]
    true = np.array([r.rr_bpm for r in valid], dtype=np.float64)
    pred = np.array([r.rr_pred_bpm for r in valid], dtype=np.float64)
    out: dict = {
        "name": run.name,
        "model_type": run.model_type,
        "units": run.units,
        "augmented": run.augmented,
        "split": run.split,
        "n_segments": len(run.rows),
        "segment": _segment_metrics(run.rows, rr_norm),
        "bland_altman": metrics.bland_altman(true, pred).to_dict(),
        "rr_ranges": metrics.mse_z_by_rr_range(true, pred, *rr_norm),
    }
    with_rc = [r for r in valid if r.rc_pred is not None]
    if with_rc:
        rc_true = np.array([r.respiration_count for r in with_rc])
        rc_pred = np.array([r.rc_pred for r in with_rc], dtype=np.float64)
        out["respiration_count"] = {
            "n": len(with_rc),
            "ccc": metrics.ccc(rc_true, rc_pred),
            "pearson": metrics.pearson_r(rc_true, rc_pred),
            "mae": metrics.mae(rc_true, rc_pred),
        }
    out["breakdowns"] = {}
    for dim, key_of in BREAKDOWNS.items():
        groups: dict[str, list[PredictionRow]] = {}
        for row in run.rows:
            groups.setdefault(key_of(row), []).append(row)
        order = _group_order(dim, groups)
        out["breakdowns"][dim] = {g: _segment_metrics(groups[g], rr_norm) for g in order}
    out["recording_level"] = _recording_level(run)
    return out


def _group_order(dim: str, groups: Mapping[str, object]) -> list[str]:
    if dim == "snr_band":
        return [b for b in SNR_BANDS if b in groups]
    return sorted(groups)


# ----------------------------------------------------------------------------------------------------
# Tables: each is a list of small typed rows built by one function, which also says what is missing.
# A row knows its JSON (the report.json layout) and its Markdown cells, beside its column headings.


def _model_label(model_type: str, units: int | None) -> str:
    base = MODEL_NAMES[model_type]
    return base if units is None else f"{base}-{units}"


def _entry_label(entry: Mapping[str, Any]) -> str:
    return _model_label(entry["model_type"], entry["units"])


def _primary_split(entries: Sequence[Mapping[str, Any]]) -> str:
    return "test" if any(e["split"] == "test" for e in entries) else "val"


@dataclasses.dataclass(frozen=True)
class SplitScores:
    """Table I's numbers of one run on one split (nan where the run has none, or no such split)."""

    ccc: float = math.nan
    pearson: float = math.nan
    f1_breath: float = math.nan
    f1_noise: float = math.nan

    @classmethod
    def of(cls, segment: Mapping[str, Any]) -> SplitScores:
        return cls(**{f.name: segment.get(f.name, math.nan) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class Table1Row:
    """Table I: one neural run name, its validation and evaluation (test) scores side by side."""

    HEADER: ClassVar[tuple[str, ...]] = (
        "Run",
        "Model",
        "Aug.",
        *(f"{m} {s}" for s in REPORT_SPLITS for m in ("CCC RR", "Pearson RR", "F1 breath", "F1 noise")),
    )
    name: str
    model: str
    model_type: str
    units: int | None
    augmented: bool
    scores: Mapping[str, SplitScores]  # by split, every one of REPORT_SPLITS

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "model": self.model,
            "model_type": self.model_type,
            "units": self.units,
            "augmented": self.augmented,
        }
        for split in REPORT_SPLITS:
            out.update({f"{k}_{split}": v for k, v in dataclasses.asdict(self.scores[split]).items()})
        return out

    def cells(self) -> list[object]:
        scores = (v for split in REPORT_SPLITS for v in dataclasses.astuple(self.scores[split]))
        return [self.name, self.model, self.augmented, *scores]


def _table1(neural: Sequence[Mapping[str, Any]]) -> tuple[list[Table1Row], list[str]]:
    rows, missing = [], []
    for name in dict.fromkeys(e["name"] for e in neural):
        by_split = {e["split"]: e for e in neural if e["name"] == name}
        first = next(iter(by_split.values()))
        scores = {}
        for split in REPORT_SPLITS:
            scores[split] = SplitScores.of(by_split[split]["segment"]) if split in by_split else SplitScores()
            if split not in by_split:
                missing.append(f"{name}: no {'validation' if split == 'val' else 'test'} predictions")
        rows.append(
            Table1Row(
                name, _entry_label(first), first["model_type"], first["units"], first["augmented"], scores
            )
        )
    rows.sort(key=lambda r: (MODEL_TYPES.index(r.model_type), r.units or 0, r.augmented))
    tc_units = {e["units"] for e in neural if e["model_type"] == "tclstm"}
    absent = [f"TC-LSTM-{u}" for u in PAPER_UNITS if u not in tc_units]
    if absent:
        missing.append("the paper compares 16/32/64 units; no run of " + ", ".join(absent))
    return rows, missing


@dataclasses.dataclass(frozen=True)
class Table2Row:
    """Table II: one run on the primary split (LSTM vs TC-LSTM vs DSP)."""

    HEADER: ClassVar[tuple[str, ...]] = (
        "Run",
        "Model",
        "Aug.",
        "n",
        "CCC",
        "Pearson",
        "MSE (z)",
        "MAE bpm",
        "RMSE bpm",
        "F1 breath",
    )
    name: str
    model: str
    augmented: bool
    n: int
    ccc: float
    pearson: float
    mse_z: float
    mae_bpm: float
    rmse_bpm: float
    f1_breath: float  # nan for a run without classes (the DSP)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def cells(self) -> list[object]:
        return list(dataclasses.astuple(self))


def _table2(on_primary: Sequence[Mapping[str, Any]], primary: str) -> tuple[list[Table2Row], list[str]]:
    rows = []
    for e in on_primary:
        seg = e["segment"]
        regression = {k: seg[k] for k in ("n", "ccc", "pearson", "mse_z", "mae_bpm", "rmse_bpm")}
        f1_breath = seg.get("f1_breath", math.nan)
        rows.append(Table2Row(e["name"], _entry_label(e), e["augmented"], **regression, f1_breath=f1_breath))
    missing = [
        f"no {MODEL_NAMES[model_type]} run on the {primary} split"
        for model_type in MODEL_TYPES
        if not any(e["model_type"] == model_type for e in on_primary)
    ]
    return rows, missing


@dataclasses.dataclass(frozen=True)
class RangeCell:
    """MSE on z-normalised RR over the segments whose true RR lies in one range, and how many."""

    mse_z: float
    n: int


@dataclasses.dataclass(frozen=True)
class AugmentationSide:
    """One half of a Table III row: the run without (or with) augmentation and its cell per RR range."""

    name: str | None  # None: no such run
    cells: Mapping[str, RangeCell]  # by RR range, in metrics.RR_RANGES order


@dataclasses.dataclass(frozen=True)
class Table3Row:
    """Table III: one (model, size), MSE (z) per true-RR range without | with augmentation."""

    HEADER: ClassVar[tuple[str, ...]] = (
        "Model",
        *(f"{r} {t}" for t in ("no aug", "aug") for r in metrics.RR_RANGES),
    )
    model: str
    no_aug: AugmentationSide
    aug: AugmentationSide

    def sides(self) -> tuple[tuple[str, AugmentationSide], ...]:
        return (("no_aug", self.no_aug), ("aug", self.aug))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model}
        for tag, side in self.sides():
            for rr_range, cell in side.cells.items():
                out[f"mse_z_{rr_range}_{tag}"] = cell.mse_z
                out[f"n_{rr_range}_{tag}"] = cell.n
            out[f"name_{tag}"] = side.name
        return out

    def cells(self) -> list[object]:
        values = (cell for _, side in self.sides() for cell in side.cells.values())
        return [self.model, *(f"{_fmt(cell.mse_z)} (n={cell.n})" for cell in values)]


def _table3(on_primary: Sequence[Mapping[str, Any]]) -> tuple[list[Table3Row], list[str]]:
    rows, missing = [], []
    for model_type, units in dict.fromkeys((e["model_type"], e["units"]) for e in on_primary):
        model = _model_label(model_type, units)
        sides = {}
        for augmented in (False, True):
            tag = "aug" if augmented else "no_aug"
            match = [
                e
                for e in on_primary
                if (e["model_type"], e["units"], e["augmented"]) == (model_type, units, augmented)
            ]
            if len(match) > 1:
                missing.append(f"{model} ({tag}): several runs, showing {match[0]['name']!r}")
            if not match and model_type != "dsp":
                missing.append(f"{model}: no run {'with' if augmented else 'without'} augmentation")
            ranges = match[0]["rr_ranges"] if match else {}
            cells = {
                r: RangeCell(ranges[r]["mse_z"], ranges[r]["n"]) if match else RangeCell(math.nan, 0)
                for r in metrics.RR_RANGES
            }
            sides[tag] = AugmentationSide(match[0]["name"] if match else None, cells)
        rows.append(Table3Row(model, sides["no_aug"], sides["aug"]))
    return rows, missing


@dataclasses.dataclass(frozen=True)
class RecordingRow:
    """Recording level: one run and source, with the DSP baseline's MAE on the same recordings."""

    HEADER: ClassVar[tuple[str, ...]] = (
        "Run",
        "Source",
        "Recordings",
        "MAE bpm",
        "RMSE bpm",
        "Bias bpm",
        "CCC",
        "DSP MAE same rec.",
        "MAE / DSP",
    )
    name: str
    model: str
    source: str
    n_recordings: int
    n_missing_pred: int
    mae_bpm: float
    rmse_bpm: float
    bias_bpm: float
    ccc: float
    dsp_mae_same_recordings_bpm: float = math.nan  # nan: no DSP run, or this is the DSP's own row
    mae_over_dsp_mae: float = math.nan

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def cells(self) -> list[object]:
        return [
            self.name,
            self.source,
            self.n_recordings,
            self.mae_bpm,
            self.rmse_bpm,
            self.bias_bpm,
            self.ccc,
            self.dsp_mae_same_recordings_bpm,
            self.mae_over_dsp_mae,
        ]


def _recording_table(on_primary: Sequence[Mapping[str, Any]]) -> tuple[list[RecordingRow], list[str]]:
    rows = []
    dsp = next((e for e in on_primary if e["model_type"] == "dsp"), None)
    for e in on_primary:
        level = e["recording_level"]
        for source, summary in level["by_source"].items():
            if summary["n_recordings"] == 0 and summary["n_missing_pred"] == 0:
                continue
            dsp_mae = ratio = math.nan  # none to compare with, or this is the DSP's own row
            if dsp is not None and e is not dsp:
                dsp_mae, ratio = _versus_dsp(
                    level["recordings"], dsp["recording_level"]["recordings"], source
                )
            rows.append(
                RecordingRow(
                    e["name"],
                    _entry_label(e),
                    source,
                    **summary,
                    dsp_mae_same_recordings_bpm=dsp_mae,
                    mae_over_dsp_mae=ratio,
                )
            )
    missing = []
    if not rows:
        missing.append("no rows carry a recording id")
    elif dsp is None:
        missing.append("no DSP run to compare with")
    return rows, missing


@dataclasses.dataclass(frozen=True)
class Tables:
    """Tables I-III and the recording-level table on the primary split, and what each is missing."""

    primary_split: str
    table1: list[Table1Row]
    table2: list[Table2Row]
    table3: list[Table3Row]
    recording_level: list[RecordingRow]
    missing: dict[str, list[str]]  # by table: "table1", "table2", "table3", "recording_level"

    def to_json(self) -> dict[str, Any]:
        return {
            "primary_split": self.primary_split,
            "table1": [r.to_json() for r in self.table1],
            "table2": [r.to_json() for r in self.table2],
            "table3": [r.to_json() for r in self.table3],
            "recording_level": [r.to_json() for r in self.recording_level],
            "missing": self.missing,
        }


def build_tables(entries: Sequence[Mapping[str, Any]]) -> Tables:
    """Tables I-III and the recording-level table from the runs' metrics (``run_metrics`` entries)."""
    primary = _primary_split(entries)
    on_primary = [e for e in entries if e["split"] == primary]
    table1, missing1 = _table1([e for e in entries if e["model_type"] != "dsp"])
    table2, missing2 = _table2(on_primary, primary)
    table3, missing3 = _table3(on_primary)
    recording, missing_recording = _recording_table(on_primary)
    missing = {
        "table1": missing1,
        "table2": missing2,
        "table3": missing3,
        "recording_level": missing_recording,
    }
    return Tables(primary, table1, table2, table3, recording, missing)


def _versus_dsp(mine: Sequence[dict], dsp: Sequence[dict], source: str) -> tuple[float, float]:
    """(DSP MAE, my MAE / DSP MAE) over the recordings both predicted; ratio nan if DSP MAE is 0."""
    dsp_pred = {r["recording"]: r["rr_pred_bpm"] for r in dsp if math.isfinite(r["rr_pred_bpm"])}
    both = [
        r
        for r in mine
        if (source == "all" or r["source"] == source)
        and r["recording"] in dsp_pred
        and math.isfinite(r["rr_pred_bpm"])
    ]
    if not both:
        return math.nan, math.nan
    true = np.array([r["rr_true_bpm"] for r in both])
    my_mae = metrics.mae(true, np.array([r["rr_pred_bpm"] for r in both]))
    dsp_mae = metrics.mae(true, np.array([dsp_pred[r["recording"]] for r in both]))
    return dsp_mae, (my_mae / dsp_mae if dsp_mae > 0 else math.nan)


# ----------------------------------------------------------------------------------------------------
# Files


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def _json_safe(value: object) -> object:
    """nan/inf -> None (JSON has no NaN), numpy scalars -> Python, recursively."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _plots(run: RunPredictions, entry: Mapping, out_dir: Path) -> dict[str, str]:
    """Scatter (predicted vs true RR) and Bland-Altman plots; returns their file names."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    valid = [r for r in run.rows if math.isfinite(r.rr_pred_bpm)]
    true = np.array([r.rr_bpm for r in valid])
    pred = np.array([r.rr_pred_bpm for r in valid])
    stem = f"{_slug(run.name)}_{run.split}"
    names = {"scatter": f"scatter_{stem}.png", "bland_altman": f"bland_altman_{stem}.png"}

    fig = Figure(figsize=(4.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(true, pred, s=8, alpha=0.5)
    hi = max([60.0, *true.tolist(), *pred.tolist()]) if valid else 60.0
    ax.plot([0, hi], [0, hi], color="grey", linewidth=1)
    ax.set(xlabel="true RR (breaths/min)", ylabel="predicted RR (breaths/min)", xlim=(0, hi), ylim=(0, hi))
    ax.set_title(f"{run.label}: CCC {_fmt(entry['segment']['ccc'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / names["scatter"], dpi=100)

    ba = entry["bland_altman"]
    fig = Figure(figsize=(5.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter((true + pred) / 2.0, pred - true, s=8, alpha=0.5)
    for value, style in ((ba["bias"], "-"), (ba["loa_low"], "--"), (ba["loa_high"], "--")):
        if value is not None and math.isfinite(value):
            ax.axhline(value, color="grey", linestyle=style, linewidth=1)
    ax.set(xlabel="mean of true and predicted RR (breaths/min)", ylabel="predicted - true (breaths/min)")
    ax.set_title(
        f"{run.label}: bias {_fmt(ba['bias'])}, LoA {_fmt(ba['loa_low'])} to {_fmt(ba['loa_high'])}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out_dir / names["bland_altman"], dpi=100)
    return names


def _write_predictions_csv(runs: Sequence[RunPredictions], path: Path) -> None:
    header = ["run", "model_type", "units", "augmented", *COLUMNS, "rr_pred_bpm", "rc_pred"]
    header += [f"p_{c}" for c in BREATH_CLASSES] + ["noise_prob"]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for run in runs:
            for row in run.rows:
                probs = row.breath_probs or (None,) * len(BREATH_CLASSES)
                values: list[object] = [run.name, run.model_type, run.units, int(run.augmented)]
                values += [getattr(row, c) for c in COLUMNS]
                values += [row.rr_pred_bpm, row.rc_pred, *probs, row.noise_prob]
                writer.writerow(["" if v is None else v for v in values])


def _write_recordings_csv(entries: Sequence[Mapping], path: Path) -> None:
    header = [
        "run",
        "split",
        "recording",
        "source",
        "participant",
        "n_segments",
        "rr_true_bpm",
        "rr_pred_bpm",
    ]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for e in entries:
            for r in e["recording_level"]["recordings"]:
                writer.writerow([e["name"], e["split"], *(r[k] for k in header[2:])])


@dataclasses.dataclass(frozen=True)
class RunRow:
    """The report's list of runs: what each is and how many segments it could not predict."""

    HEADER: ClassVar[tuple[str, ...]] = (
        "Run",
        "Model",
        "Augmented",
        "Split",
        "Segments",
        "Missing predictions",
    )
    name: str
    model: str
    augmented: bool
    split: str
    n_segments: int
    n_missing_pred: int

    @classmethod
    def of(cls, e: Mapping[str, Any]) -> RunRow:
        return cls(
            e["name"],
            _entry_label(e),
            e["augmented"],
            e["split"],
            e["n_segments"],
            e["segment"]["n_missing_pred"],
        )

    def cells(self) -> list[object]:
        return list(dataclasses.astuple(self))


@dataclasses.dataclass(frozen=True)
class BreakdownRow:
    """One group of a breakdown (a gender, stage, SNR band or source) of one run."""

    name: str
    group: str
    n: int
    ccc: float
    mae_bpm: float
    mse_z: float
    f1_breath: float | None  # None for a run without classes

    @staticmethod
    def header(dim: str) -> tuple[str, ...]:
        return ("Run", dim, "n", "CCC", "MAE bpm", "MSE (z)", "F1 breath")

    @classmethod
    def rows(cls, e: Mapping[str, Any], dim: str) -> list[BreakdownRow]:
        return [
            cls(e["name"], group, m["n"], m["ccc"], m["mae_bpm"], m["mse_z"], m.get("f1_breath"))
            for group, m in e["breakdowns"][dim].items()
        ]

    def cells(self) -> list[object]:
        return list(dataclasses.astuple(self))


@dataclasses.dataclass(frozen=True)
class BlandAltmanRow:
    """Bland-Altman statistics of one run (predicted - true, breaths/min)."""

    HEADER: ClassVar[tuple[str, ...]] = ("Run", "Split", "n", "Bias", "SD", "LoA low", "LoA high")
    name: str
    split: str
    n: int
    bias: float
    sd: float
    loa_low: float
    loa_high: float

    @classmethod
    def of(cls, e: Mapping[str, Any]) -> BlandAltmanRow:
        ba = e["bland_altman"]
        return cls(e["name"], e["split"], *(ba[k] for k in ("n", "bias", "sd", "loa_low", "loa_high")))

    def cells(self) -> list[object]:
        return list(dataclasses.astuple(self))


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(value)
    if isinstance(value, float | np.floating):
        return "—" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _md_section(heading: str, lines: Sequence[str]) -> list[str]:
    return ["", f"## {heading}", "", *lines]


def _md_table_section(
    heading: str, header: Sequence[str], rows: Sequence[Sequence[object]], missing: Sequence[str]
) -> list[str]:
    """A numbered table: 'No runs for this table.' when empty, then what it is missing."""
    body = _md_table(header, rows) if rows else ["No runs for this table."]
    return _md_section(heading, [*body, *(f"- Missing: {note}" for note in missing)])


def _md_intro(title: str, notes: Sequence[str], rr_norm: Mapping[str, float], split_name: str) -> list[str]:
    return [
        f"# {title}",
        "",
        *notes,
        *([""] if notes else []),
        f"RR z-normalisation (training labels): mean {_fmt(rr_norm['mean'])}, std {_fmt(rr_norm['std'])} "
        f"breaths/min. Breakdowns and Tables II-III use the {split_name} split. '—' = not available.",
    ]


def _md_numbered_tables(tables: Tables, split_name: str) -> list[str]:
    missing = tables.missing
    return [
        *_md_table_section(
            "Table I: by model size, validation and evaluation (test) sets",
            Table1Row.HEADER,
            [r.cells() for r in tables.table1],
            missing["table1"],
        ),
        *_md_table_section(
            f"Table II: LSTM vs TC-LSTM vs DSP, {split_name}",
            Table2Row.HEADER,
            [r.cells() for r in tables.table2],
            missing["table2"],
        ),
        *_md_table_section(
            f"Table III: MSE (z) per true-RR range, without | with augmentation, {split_name}",
            Table3Row.HEADER,
            [r.cells() for r in tables.table3],
            missing["table3"],
        ),
    ]


def _md_breakdowns(on_primary: Sequence[Mapping[str, Any]], split_name: str) -> list[str]:
    out: list[str] = []
    for dim in BREAKDOWNS:
        rows = [r.cells() for e in on_primary for r in BreakdownRow.rows(e, dim)]
        out += _md_section(
            f"By {dim.replace('_', ' ')}, {split_name}", _md_table(BreakdownRow.header(dim), rows)
        )
    return out


def _md_recording_level(
    tables: Tables, on_primary: Sequence[Mapping[str, Any]], split_name: str
) -> list[str]:
    out = _md_table_section(
        f"Recording level, {split_name}",
        RecordingRow.HEADER,
        [r.cells() for r in tables.recording_level],
        tables.missing["recording_level"],
    )
    if tables.recording_level:
        methods = {e["name"]: e["recording_level"]["method"] for e in on_primary}
        out += ["", "Recording rate: " + "; ".join(f"{n}: {m}" for n, m in methods.items()) + "."]
    return out


def _md_plots(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["", "## Plots", ""]
    for e in entries:
        plots = e["plots"]
        out += [
            f"### {e['name']} [{e['split']}]",
            "",
            f"![scatter]({plots['scatter']}) ![Bland-Altman]({plots['bland_altman']})",
            "",
        ]
    return out


def _markdown(report: Mapping[str, Any], tables: Tables, title: str, notes: Sequence[str]) -> str:
    entries = report["runs"]
    on_primary = [e for e in entries if e["split"] == tables.primary_split]
    split_name = "evaluation set (test)" if tables.primary_split == "test" else "validation set"
    out = [
        *_md_intro(title, notes, report["rr_norm"], split_name),
        *_md_section("Runs", _md_table(RunRow.HEADER, [RunRow.of(e).cells() for e in entries])),
        *_md_numbered_tables(tables, split_name),
        *_md_breakdowns(on_primary, split_name),
        *_md_recording_level(tables, on_primary, split_name),
        *_md_section(
            "Bland-Altman (predicted - true, breaths/min)",
            _md_table(BlandAltmanRow.HEADER, [BlandAltmanRow.of(e).cells() for e in entries]),
        ),
        *_md_plots(entries),
    ]
    return "\n".join(out).rstrip() + "\n"


def write_report(
    runs: Sequence[RunPredictions],
    out_dir: Path | str,
    rr_norm: tuple[float, float],
    title: str = "Respira evaluation report",
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Write report.md, report.json, predictions.csv, recordings.csv and the plots; return the JSON dict.

    ``rr_norm`` = (mean, std) of the training labels' RR. ``notes`` are lines put under the title
    (data, checkpoint, command). Raises ``ValueError`` naming the run for an unknown model type or
    split, a run given twice, or malformed rows, before anything is written.
    """
    runs = list(runs)
    _validate(runs, rr_norm)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for run in runs:
        entry = run_metrics(run, rr_norm)
        entry["plots"] = _plots(run, entry, out)
        entries.append(entry)
    report = {
        "title": title,
        "rr_norm": {"mean": float(rr_norm[0]), "std": float(rr_norm[1])},
        "runs": entries,
    }
    tables = build_tables(entries)
    report["tables"] = tables.to_json()
    _write_predictions_csv(runs, out / "predictions.csv")
    _write_recordings_csv(entries, out / "recordings.csv")
    safe = _json_safe(report)
    assert isinstance(safe, dict)  # a dict in, a dict out
    (out / "report.json").write_text(json.dumps(safe, indent=2, allow_nan=False) + "\n")
    (out / "report.md").write_text(_markdown(report, tables, title, notes))
    return safe
