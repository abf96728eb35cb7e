"""``python -m training.estimate``: the JSON contract, any rate and length, and bad files."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from training.checkpoint import DEFAULT_CHECKPOINT, save_checkpoint
from training.config import TrainConfig
from training.estimate import main, weighted_median, window_starts
from training.models import RRModel

TOP_KEYS = {"path", "duration_s", "rr_bpm", "respiration_count", "breath_class", "noise_prob", "segments"}
SEGMENT_KEYS = {
    "start_s",
    "end_s",
    "rr_bpm",
    "respiration_count",
    "breath_class",
    "breath_probs",
    "noise_prob",
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    save_checkpoint(path, RRModel("tclstm", 16), TrainConfig(units=16))
    return path


def _breathing(path, seconds, rate, sample_rate=16000, channels=1):
    rng = np.random.default_rng(int(seconds * 10))
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    mono = 0.1 * np.clip(np.sin(2 * np.pi * rate / 60 * t), 0, None) ** 2 * rng.standard_normal(len(t))
    sf.write(path, np.stack([mono] * channels, axis=1) if channels > 1 else mono, sample_rate)
    return path


def test_json_contract_for_several_files(tmp_path, checkpoint, capsys):
    a = _breathing(tmp_path / "a.wav", 20.0, 15, sample_rate=44100, channels=2)
    b = _breathing(tmp_path / "b.flac", 4.5, 30, sample_rate=8000)
    assert main([str(a), str(b), "--checkpoint", str(checkpoint), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in lines] == [str(a), str(b)]
    for result in lines:
        assert set(result) == TOP_KEYS
        assert result["breath_class"] in ("none", "normal", "heavy")
        for seg in result["segments"]:
            assert set(seg) == SEGMENT_KEYS
            assert len(seg["breath_probs"]) == 3 and abs(sum(seg["breath_probs"]) - 1) < 1e-3
        weights = [(1 - s["breath_probs"][0]) * (1 - s["noise_prob"]) + 1e-3 for s in result["segments"]]
        rates = [s["rr_bpm"] for s in result["segments"]]
        assert result["rr_bpm"] == pytest.approx(
            weighted_median(np.array(rates), np.array(weights)), abs=0.01
        )
    assert lines[0]["duration_s"] == pytest.approx(20.0, abs=0.01)
    # 6 s windows every 3 s over 20 s: starts 0, 3, 6, 9, 12, and 14 aligned to the end
    assert [s["start_s"] for s in lines[0]["segments"]] == [0, 3, 6, 9, 12, 14]
    assert len(lines[1]["segments"]) == 1 and lines[1]["segments"][0]["end_s"] == pytest.approx(4.5)


def test_bad_files_are_reported_and_the_rest_still_run(tmp_path, checkpoint, capsys):
    good = _breathing(tmp_path / "good.wav", 8.0, 12)
    short = _breathing(tmp_path / "short.wav", 2.0, 12)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....not really audio")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000 * 5), 16000)
    code = main([str(junk), str(good), str(short), str(silent), "--checkpoint", str(checkpoint), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [("error" in r) for r in lines] == [True, False, True, True]
    assert "junk.wav" in lines[0]["error"]
    assert "short.wav" in lines[2]["error"] and "too short" in lines[2]["error"]
    assert "silent" in lines[3]["error"]
    assert captured.err.count("error:") == 3


def test_window_helpers():
    assert window_starts(4.0) == [0.0]
    assert window_starts(12.0) == [0.0, 3.0, 6.0]
    assert window_starts(13.0) == [0.0, 3.0, 6.0, 7.0]
    assert weighted_median(np.array([1.0, 2.0, 100.0]), np.array([1.0, 1.0, 1.0])) == 2.0
    assert weighted_median(np.array([1.0, 2.0, 100.0]), np.array([0.1, 0.1, 5.0])) == 100.0


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="no shipped default model in this checkout")
def test_shipped_model_hears_resting_and_heavy_breathing(tmp_path, capsys):
    """The default model out of the box: a clean synthetic resting stage vs an end-of-exercise stage."""
    from training.synth import make_participant, synth_recording

    person = make_participant("estimate-test", seed=99)
    files = []
    for stage, rate in ((1, 12.0), (2, 40.0)):
        rec = synth_recording(person, stage, 30.0, np.random.default_rng(stage), rate_bpm=rate)
        files.append(tmp_path / f"stage{stage}.wav")
        sf.write(files[-1], rec.audio, 16000)
    assert main([str(f) for f in files] + ["--json"]) == 0
    resting, heavy = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert abs(resting["rr_bpm"] - 12.0) < 4.0 and abs(heavy["rr_bpm"] - 40.0) < 8.0
    assert heavy["breath_class"] == "heavy" and resting["breath_class"] == "normal"
