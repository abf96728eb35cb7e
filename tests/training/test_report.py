"""The report writes every file, its JSON numbers are the metrics recomputed directly, and its tables
say what is missing instead of inventing rows."""

import csv
import json
import math

import numpy as np
import pytest

from training import metrics
from training.manifest import BREATH_CLASSES, breath_class_for
from training.report import PredictionRow, RunPredictions, snr_band, write_report

RR_NORM = (16.0, 6.0)


def make_rows(rng: np.random.Generator, error_sd: float, with_classes: bool = True) -> list[PredictionRow]:
    """48 segments: 8 recordings of 6 segments, two sources, both genders, all stages and SNR bands."""
    rows = []
    snrs = [None, 35.0, 25.0, 15.0]
    for rec in range(8):
        rr_true = [8.0, 12.0, 14.0, 18.0, 22.0, 28.0, 35.0, 45.0][rec]
        for k in range(6):
            snr = snrs[(rec + k) % 4]
            probs = rng.dirichlet(np.ones(3)) if with_classes else None
            rows.append(
                PredictionRow(
                    path=f"rec{rec}.wav",
                    start_s=6.0 * k,
                    end_s=6.0 * k + 6.0,
                    rr_bpm=rr_true,
                    respiration_count=rr_true / 10,
                    breath_class=breath_class_for(rr_true),
                    noisy=int(snr is not None),
                    stage=1 + k % 4,
                    participant=f"p{rec}",
                    gender=("female", "male")[rec % 2],
                    source=("synthetic", "rrujo")[rec // 4],
                    split="test",
                    snr_db=snr,
                    recording=f"r{rec}",
                    rr_pred_bpm=float(rr_true + rng.normal(0.0, error_sd)),
                    rc_pred=float(rr_true / 10 + rng.normal(0.0, 0.1)) if with_classes else None,
                    breath_probs=tuple(probs) if probs is not None else None,
                    noise_prob=float(rng.uniform()) if with_classes else None,
                )
            )
    return rows


def as_split(rows: list[PredictionRow], split: str) -> list[PredictionRow]:
    return [PredictionRow(**{**r.__dict__, "split": split}) for r in rows]


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    rng = np.random.default_rng(0)
    tc_test = make_rows(rng, 1.0)
    runs = [
        RunPredictions("TC-LSTM-32", "tclstm", 32, True, "test", tc_test),
        RunPredictions("TC-LSTM-32", "tclstm", 32, True, "val", as_split(make_rows(rng, 1.5), "val")),
        RunPredictions("TC-LSTM-32 no aug", "tclstm", 32, False, "test", make_rows(rng, 2.0)),
        RunPredictions("LSTM-32", "lstm", 32, True, "test", make_rows(rng, 3.0)),
    ]
    dsp_rows = make_rows(rng, 5.0, with_classes=False)
    dsp_rows[0].rr_pred_bpm = math.nan  # a segment the baseline could not use
    whole = {f"r{i}": [8.0, 12.0, 14.0, 18.0, 22.0, 28.0, 35.0, 45.0][i] + 2.0 for i in range(8)}
    runs.append(RunPredictions("DSP", "dsp", None, False, "test", dsp_rows, recording_rr_pred_bpm=whole))
    out = tmp_path_factory.mktemp("report")
    summary = write_report(runs, out, rr_norm=RR_NORM, notes=["Data: generated for the test."])
    return runs, out, summary


def test_writes_every_file(full_report):
    runs, out, summary = full_report
    for name in ("report.md", "report.json", "predictions.csv", "recordings.csv"):
        assert (out / name).stat().st_size > 0
    for entry in summary["runs"]:
        for png in entry["plots"].values():
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # strict JSON: no NaN literals
    loaded = json.loads((out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert loaded == summary
    with (out / "predictions.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == sum(len(r.rows) for r in runs)
    first = table[0]
    assert first["run"] == "TC-LSTM-32" and float(first["rr_pred_bpm"]) == runs[0].rows[0].rr_pred_bpm
    assert float(first["p_heavy"]) == runs[0].rows[0].breath_probs[2]
    md = (out / "report.md").read_text()
    for heading in (
        "Table I",
        "Table II",
        "Table III",
        "By gender",
        "By stage",
        "By snr band",
        "Recording level",
    ):
        assert heading in md
    assert "Data: generated for the test." in md


def test_json_numbers_equal_direct_metrics(full_report):
    runs, _, summary = full_report
    run, entry = runs[0], summary["runs"][0]
    true = np.array([r.rr_bpm for r in run.rows])
    pred = np.array([r.rr_pred_bpm for r in run.rows])
    seg = entry["segment"]
    assert seg["ccc"] == pytest.approx(metrics.ccc(true, pred))
    assert seg["pearson"] == pytest.approx(metrics.pearson_r(true, pred))
    assert seg["mse_z"] == pytest.approx(np.mean(((pred - true) / RR_NORM[1]) ** 2))
    assert seg["mae_bpm"] == pytest.approx(np.mean(np.abs(pred - true)))
    assert seg["rmse_bpm"] == pytest.approx(np.sqrt(np.mean((pred - true) ** 2)))
    breath_true = [BREATH_CLASSES.index(r.breath_class) for r in run.rows]
    breath_pred = [int(np.argmax(r.breath_probs)) for r in run.rows]
    assert seg["f1_breath"] == pytest.approx(metrics.macro_f1(breath_true, breath_pred, 3))
    noise_pred = [int(r.noise_prob >= 0.5) for r in run.rows]
    assert seg["f1_noise"] == pytest.approx(metrics.macro_f1([r.noisy for r in run.rows], noise_pred, 2))
    assert entry["bland_altman"]["bias"] == pytest.approx(np.mean(pred - true))
    for name, cell in metrics.mse_z_by_rr_range(true, pred, *RR_NORM).items():
        assert entry["rr_ranges"][name]["mse_z"] == pytest.approx(cell["mse_z"])
    # breakdowns
    female = [r for r in run.rows if r.gender == "female"]
    assert entry["breakdowns"]["gender"]["female"]["ccc"] == pytest.approx(
        metrics.ccc([r.rr_bpm for r in female], [r.rr_pred_bpm for r in female])
    )
    band = [r for r in run.rows if 20 <= (r.snr_db or -1) < 30]
    assert entry["breakdowns"]["snr_band"]["20-30"]["n"] == len(band)
    assert list(entry["breakdowns"]["snr_band"]) == ["clean", "30-40", "20-30", "10-20"]
    assert set(entry["breakdowns"]["stage"]) == {"1", "2", "3", "4"}
    # recording level: median of each recording's segment predictions
    rec_true, rec_pred = [], []
    for rec in sorted({r.recording for r in run.rows}):
        mine = [r for r in run.rows if r.recording == rec]
        rec_true.append(mine[0].rr_bpm)
        rec_pred.append(float(np.median([r.rr_pred_bpm for r in mine])))
    level = entry["recording_level"]["by_source"]["all"]
    assert level["n_recordings"] == 8
    assert level["mae_bpm"] == pytest.approx(metrics.mae(rec_true, rec_pred))
    # tables repeat the run numbers
    table2 = {r["name"]: r for r in summary["tables"]["table2"]}
    assert table2["TC-LSTM-32"]["ccc"] == seg["ccc"]
    table1 = {r["name"]: r for r in summary["tables"]["table1"]}
    assert table1["TC-LSTM-32"]["ccc_test"] == seg["ccc"]
    assert table1["TC-LSTM-32"]["ccc_val"] == summary["runs"][1]["segment"]["ccc"]


def test_dsp_run_missing_predictions_and_whole_recording_estimates(full_report):
    _, _, summary = full_report
    dsp = summary["runs"][4]
    assert dsp["segment"]["n_missing_pred"] == 1 and dsp["segment"]["n"] == 47
    assert "f1_breath" not in dsp["segment"]
    level = dsp["recording_level"]
    assert level["method"] == "run's whole-recording estimate"
    assert level["by_source"]["all"]["mae_bpm"] == pytest.approx(2.0)
    rows = {(r["name"], r["source"]): r for r in summary["tables"]["recording_level"]}
    tc = rows[("TC-LSTM-32", "all")]
    assert tc["dsp_mae_same_recordings_bpm"] == pytest.approx(2.0)
    assert tc["mae_over_dsp_mae"] == pytest.approx(tc["mae_bpm"] / 2.0)
    assert rows[("TC-LSTM-32", "rrujo")]["n_recordings"] == 4
    table2 = {r["name"]: r for r in summary["tables"]["table2"]}
    assert table2["DSP"]["f1_breath"] is None  # JSON null: the baseline has no classes


def test_table_iii_pairs_augmentation(full_report):
    _, _, summary = full_report
    table3 = {r["model"]: r for r in summary["tables"]["table3"]}
    tc = table3["TC-LSTM-32"]
    assert tc["name_aug"] == "TC-LSTM-32" and tc["name_no_aug"] == "TC-LSTM-32 no aug"
    by_name = {(e["name"], e["split"]): e for e in summary["runs"]}
    assert tc["mse_z_<15_no_aug"] == by_name[("TC-LSTM-32 no aug", "test")]["rr_ranges"]["<15"]["mse_z"]
    assert tc["n_>25_aug"] == 3 * 6
    missing = summary["tables"]["missing"]
    assert "LSTM-32: no run without augmentation" in missing["table3"]
    assert any("TC-LSTM-16, TC-LSTM-64" in m for m in missing["table1"])
    assert "LSTM-32: no validation predictions" in missing["table1"]


def test_single_checkpoint_gives_one_row_tables(tmp_path):
    run = RunPredictions("only", "tclstm", 32, False, "test", make_rows(np.random.default_rng(1), 1.0))
    summary = write_report([run], tmp_path, rr_norm=RR_NORM)
    tables = summary["tables"]
    assert len(tables["table1"]) == len(tables["table2"]) == len(tables["table3"]) == 1
    assert tables["table1"][0]["ccc_val"] is None
    assert "no LSTM run on the test split" in tables["missing"]["table2"]
    assert "no DSP run on the test split" in tables["missing"]["table2"]
    assert "no DSP run to compare with" in tables["missing"]["recording_level"]
    md = (tmp_path / "report.md").read_text()
    assert "Missing: no LSTM run on the test split" in md


def test_dsp_only_and_validation_only(tmp_path):
    rows = as_split(make_rows(np.random.default_rng(2), 4.0, with_classes=False), "val")
    summary = write_report(
        [RunPredictions("DSP", "dsp", None, False, "val", rows)], tmp_path, rr_norm=RR_NORM
    )
    assert summary["tables"]["primary_split"] == "val"
    assert summary["tables"]["table1"] == []
    assert "No runs for this table." in (tmp_path / "report.md").read_text()


def test_bad_input_is_refused_before_writing(tmp_path):
    rows = make_rows(np.random.default_rng(3), 1.0)
    run = RunPredictions("a", "tclstm", 32, False, "test", rows)
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="given twice"):
        write_report([run, run], out, rr_norm=RR_NORM)
    with pytest.raises(ValueError, match="model_type"):
        write_report([RunPredictions("b", "cnn", 8, False, "test", rows)], out, rr_norm=RR_NORM)
    with pytest.raises(ValueError, match="split"):
        write_report([RunPredictions("b", "lstm", 8, False, "train", rows)], out, rr_norm=RR_NORM)
    with pytest.raises(ValueError, match="rr_norm"):
        write_report([run], out, rr_norm=(15.0, 0.0))
    with pytest.raises(ValueError, match="disagree"):
        write_report([run, RunPredictions("a", "lstm", 32, False, "val", rows)], out, rr_norm=RR_NORM)
    unset = [PredictionRow(**{**rows[0].__dict__, "rr_pred_bpm": None})]
    with pytest.raises(ValueError, match="row 0: rr_pred_bpm"):
        write_report([RunPredictions("c", "lstm", 8, False, "test", unset)], out, rr_norm=RR_NORM)
    assert not out.exists()


def test_snr_bands():
    assert [snr_band(v) for v in (None, 45.0, 40.0, 30.0, 29.9, 20.0, 10.0, 5.0)] == [
        "clean",
        ">40",
        "30-40",
        "30-40",
        "20-30",
        "20-30",
        "10-20",
        "<10",
    ]
    assert snr_band(None, noisy=1) == "noisy, SNR unknown"
