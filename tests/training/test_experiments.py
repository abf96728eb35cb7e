"""``python -m training experiments --quick``: the whole grid on a tiny corpus fills the paper's tables."""

import json

import pytest

from training.cli import main

pytestmark = pytest.mark.slow


def test_quick_grid_fills_tables(tmp_path, capsys):
    corpus = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(corpus), "--segments", "120", "--seed", "3"]) == 0
    out = tmp_path / "exp"
    assert main(["experiments", "--data", str(corpus), "--out", str(out), "--quick", "--quiet"]) == 0
    report = json.loads((out / "report" / "report.json").read_text())
    names = {run["name"] for run in report["runs"]}
    assert {
        "TC-LSTM-16",
        "TC-LSTM-32",
        "TC-LSTM-64",
        "LSTM-32",
        "TC-LSTM-32 +aug",
        "TC-LSTM-32 (ours)",
        "DSP baseline",
    } <= names
    markdown = (out / "report" / "report.md").read_text()
    for heading in ("Table I", "Table II", "Table III"):
        assert heading in markdown
    # Table III has both columns now: a model trained with augmentation exists
    assert "TC-LSTM-32 +aug" in markdown
    assert len(list((out / "checkpoints").glob("*.pt"))) == 6
