"""``python -m training.estimate``: the JSON contract, any rate and length, and bad files."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from training.checkpoint import DEFAULT_CHECKPOINT, save_checkpoint
from training.config import TrainConfig
from training.estimate import main
from training.estimator import segment_starts, weighted_median
from training.models import RRModel

TOP_KEYS = {
    "path",
    "duration_s",
    "rr_bpm",
    "rr_confidence",
    "reason",
    "respiration_count",
    "breath_class",
    "breath_activity",
    "noise_prob",
    "window_s",
    "timeline",
    "segments",
}
TIMELINE_KEYS = {"start_s", "end_s", "rr_bpm", "rr_confidence", "reason"}
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


def _check_answer(answer):
    """A number in 4-60 with no reason, or null with a reason: never both, never neither."""
    if answer["rr_bpm"] is None:
        assert answer["reason"] in ("no_breathing", "too_noisy")
    else:
        assert answer["reason"] is None and 4.0 <= answer["rr_bpm"] <= 60.0
    assert 0.0 <= answer["rr_confidence"] <= 1.0


def test_json_contract_for_several_files(tmp_path, checkpoint, capsys):
    a = _breathing(tmp_path / "a.wav", 20.0, 15, sample_rate=44100, channels=2)
    b = _breathing(tmp_path / "b.flac", 4.5, 30, sample_rate=8000)
    assert main([str(a), str(b), "--checkpoint", str(checkpoint), "--json", "--window-s", "15"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in lines] == [str(a), str(b)]
    for result in lines:
        assert set(result) == TOP_KEYS
        _check_answer(result)
        assert result["breath_class"] in ("none", "normal", "heavy", "unknown")
        assert result["window_s"] == 15.0
        assert isinstance(result["respiration_count"], int) and result["respiration_count"] >= 0
        for seg in result["segments"]:
            assert set(seg) == SEGMENT_KEYS
            assert len(seg["breath_probs"]) == 3 and abs(sum(seg["breath_probs"]) - 1) < 1e-3
        for point in result["timeline"]:
            assert set(point) == TIMELINE_KEYS
            _check_answer(point)
            assert point["end_s"] - point["start_s"] <= 15.0 + 1e-9
    assert lines[0]["duration_s"] == pytest.approx(20.0, abs=0.01)
    # the rolling 15 s rate every 5 s: windows ending at 5, 10, 15 and 20 s
    assert [(p["start_s"], p["end_s"]) for p in lines[0]["timeline"]] == [(0, 5), (0, 10), (0, 15), (5, 20)]
    # 6 s windows every 3 s over 20 s: starts 0, 3, 6, 9, 12, and 14 aligned to the end
    assert [s["start_s"] for s in lines[0]["segments"]] == [0, 3, 6, 9, 12, 14]
    assert len(lines[1]["segments"]) == 1 and lines[1]["segments"][0]["end_s"] == pytest.approx(4.5)


def test_a_folder_stands_for_its_audio_files(tmp_path, checkpoint, capsys):
    folder = tmp_path / "recordings"
    folder.mkdir()
    _breathing(folder / "b.wav", 6.0, 12)
    _breathing(folder / "a.flac", 6.0, 20)
    (folder / "notes.txt").write_text("not audio")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(folder), str(empty), "--checkpoint", str(checkpoint), "--json"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["path"]).name for r in lines] == ["a.flac", "b.wav", "empty"]
    assert "no audio files" in lines[2]["error"]


def test_window_outside_15_to_60_s_is_refused(tmp_path, checkpoint, capsys):
    a = _breathing(tmp_path / "a.wav", 6.0, 15)
    with pytest.raises(SystemExit):
        main([str(a), "--checkpoint", str(checkpoint), "--window-s", "90"])
    assert "15-60" in capsys.readouterr().err


def test_bad_files_are_reported_and_the_rest_still_run(tmp_path, checkpoint, capsys):
    good = _breathing(tmp_path / "good.wav", 8.0, 12)
    short = _breathing(tmp_path / "short.wav", 2.0, 12)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....not really audio")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000 * 5), 16000)
    dc = tmp_path / "dc.wav"
    sf.write(dc, np.full(16000 * 6, 0.3), 16000)
    clipped = tmp_path / "clipped.wav"
    sf.write(clipped, np.clip(20 * sf.read(good)[0], -1, 1), 16000)
    files = [junk, good, short, silent, dc, clipped]
    code = main([*map(str, files), "--checkpoint", str(checkpoint), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [("error" in r) for r in lines] == [True, False, True, True, True, False]
    assert "junk.wav" in lines[0]["error"]
    assert "short.wav" in lines[2]["error"] and "too short" in lines[2]["error"]
    assert "silent" in lines[3]["error"]
    assert "dc.wav" in lines[4]["error"] and "does not vary" in lines[4]["error"]
    _check_answer(lines[5])  # clipped audio still gets an answer or a reason
    assert captured.err.count("error:") == 4


def test_window_helpers():
    assert segment_starts(4.0) == [0.0]
    assert segment_starts(12.0) == [0.0, 3.0, 6.0]
    assert segment_starts(13.0) == [0.0, 3.0, 6.0, 7.0]
    assert weighted_median(np.array([1.0, 2.0, 100.0]), np.array([1.0, 1.0, 1.0])) == 2.0
    assert weighted_median(np.array([1.0, 2.0, 100.0]), np.array([0.1, 0.1, 5.0])) == 100.0


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="no shipped default model in this checkout")
def test_shipped_model_hears_resting_and_heavy_breathing_and_silence(tmp_path, capsys):
    """The default model out of the box: clean synthetic rest and exercise, and a no-breath clip."""
    from training.synth import make_participant, synth_recording

    person = make_participant("estimate-test", seed=99)
    files = []
    for name, stage, rate in (("rest", 1, 12.0), ("heavy", 2, 40.0), ("none", None, 0.0)):
        rec = synth_recording(person, stage, 30.0, np.random.default_rng(int(rate)), rate_bpm=rate)
        files.append(tmp_path / f"{name}.wav")
        sf.write(files[-1], rec.audio, 16000)
    assert main([str(f) for f in files] + ["--json"]) == 0
    resting, heavy, none = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert abs(resting["rr_bpm"] - 12.0) < 1.0 and abs(heavy["rr_bpm"] - 40.0) < 2.0
    assert heavy["breath_class"] == "heavy" and resting["breath_class"] == "normal"
    assert abs(resting["respiration_count"] - 6) <= 1
    assert none["rr_bpm"] is None and none["reason"] == "no_breathing"


NOISE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "noise"


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="no shipped default model in this checkout")
@pytest.mark.skipif(not NOISE_DIR.is_dir(), reason="../shared/data/noise is absent")
def test_shipped_model_gives_no_rate_for_recordings_of_only_noise(capsys):
    """Real background noise alone (an exercise bike, a kitchen, a tap, a voice, pink and white noise,
    60-95 s each): no breathing rate for the recording, and a reason instead."""
    files = sorted(NOISE_DIR.glob("*.flac"))
    assert len(files) == 6
    assert main([str(f) for f in files] + ["--json"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["rr_bpm"] for a in answers] == [None] * len(files)
    assert {a["reason"] for a in answers} <= {"no_breathing", "too_noisy"}
    assert sum(a["reason"] == "no_breathing" for a in answers) >= 5


def test_files_estimated_in_batches_answer_as_one_at_a_time(tmp_path, checkpoint):
    """``estimate_files`` runs the files' phase tracks side by side, holding at most ``max_batch_s`` of
    audio: any batch size gives the one-file-at-a-time answers (to round-off), errors in their places."""
    from training.checkpoint import load_checkpoint
    from training.estimate import estimate_files

    model, _ = load_checkpoint(checkpoint)
    paths = [
        _breathing(tmp_path / "a.wav", 12.0, 15),
        tmp_path / "missing.wav",
        _breathing(tmp_path / "b.wav", 7.0, 30, sample_rate=8000),
        _breathing(tmp_path / "c.flac", 21.0, 12),
    ]
    alone = [estimate_files([p], model)[0] for p in paths]
    for max_batch_s in (1.0, 15.0, 1000.0):  # every file alone; two batches; one batch
        together = estimate_files(paths, model, max_batch_s=max_batch_s)
        assert isinstance(together[1], Exception) and "missing.wav" in str(together[1])
        for one, batched in zip(alone, together, strict=True):
            if isinstance(one, Exception):
                assert type(batched) is type(one)
                continue
            assert batched["path"] == one["path"] and batched["reason"] == one["reason"]
            assert batched["rr_bpm"] == pytest.approx(one["rr_bpm"], abs=1e-3)
            assert [w["rr_bpm"] for w in batched["timeline"]] == pytest.approx(
                [w["rr_bpm"] for w in one["timeline"]], abs=1e-3
            )
