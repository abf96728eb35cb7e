"""Importers: labels, segmentation, splits and paths from the real RRuJO subset and a BreathMY fixture."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from corpus_fixtures import RRUJO_DIR, breath_wav, make_breathmy

from training.audio import load_audio
from training.importers import CorpusImportError, import_corpus
from training.manifest import MANIFEST_NAME, Segment, audio_path, read_manifest

needs_rrujo = pytest.mark.skipif(
    not (RRUJO_DIR / "recordings.csv").is_file(),
    reason=f"RRuJO data not found at {RRUJO_DIR} (real-corpus import not tested)",
)


def import_rrujo(src_dir: Path, out_dir: Path, **options: Any) -> list[Segment]:
    return import_corpus("rrujo", src_dir, out_dir, **options).segments


def import_breathmy(src_dir: Path, out_dir: Path, **options: Any) -> list[Segment]:
    return import_corpus("breathmy", src_dir, out_dir, **options).segments


def rrujo_rows() -> list[dict[str, str]]:
    with (RRUJO_DIR / "recordings.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def check_segments(corpus: Path, segments: list[Segment]) -> None:
    """Properties every imported corpus has, whatever the source."""
    back = read_manifest(corpus)
    assert [(b.path, b.start_s, b.end_s, b.participant, b.split) for b in back] == [
        (s.path, s.start_s, s.end_s, s.participant, s.split) for s in segments
    ]
    for seg in segments:
        assert 4.0 - 1e-9 <= seg.duration_s <= 7.0 + 1e-9
        assert seg.respiration_count == pytest.approx(seg.rr_bpm * seg.duration_s / 60.0)
        assert (seg.noisy, seg.stage, seg.environment, seg.snr_db) == (0, None, "indoor", None)
        assert audio_path(corpus, seg).is_file()
    splits_of: dict[str, set[str]] = {}
    for seg in segments:
        splits_of.setdefault(seg.participant, set()).add(seg.split)
    assert all(len(s) == 1 and "" not in s for s in splits_of.values())


# --- RRuJO, real data ------------------------------------------------------------------------------


@needs_rrujo
def test_rrujo_first_recordings(tmp_path: Path) -> None:
    rows = rrujo_rows()[:4]
    segments = import_rrujo(RRUJO_DIR, tmp_path, seed=0, limit=4)
    check_segments(tmp_path, segments)
    assert len({s.recording for s in segments}) == 4
    assert 4 * 8 <= len(segments) <= 4 * 15  # about a minute each, cut into 4-7 s
    for row in rows:
        mine = [s for s in segments if s.recording == f"rrujo/{Path(row['path']).with_suffix('')}"]
        assert mine, row["path"]
        for seg in mine:
            assert seg.rr_bpm == float(row["rr_bpm"])
            assert seg.breath_class == "normal"
            assert seg.participant == f"rrujo-{row['subject']}"
            assert seg.gender == {"F": "female", "M": "male"}[row["sex"]]
            assert seg.source == f"rrujo/{row['device']}"
            assert seg.path.startswith("audio/") and seg.path.endswith(".flac")
        # The converted copy is the whole recording at 16 kHz mono.
        info = sf.info(audio_path(tmp_path, mine[0]))
        assert (info.samplerate, info.channels) == (16_000, 1)
        assert info.duration == pytest.approx(float(row["duration_s"]), abs=0.01)
        assert max(s.end_s for s in mine) <= info.duration + 1e-3
    seg = segments[3]
    clip = load_audio(audio_path(tmp_path, seg), start_s=seg.start_s, end_s=seg.end_s)
    assert len(clip) == pytest.approx(seg.duration_s * 16_000, abs=1)


@needs_rrujo
def test_rrujo_subject_is_one_participant_across_devices(tmp_path: Path) -> None:
    """A subset folder (a few CSV rows, device folders linked in) keeps the test fast."""
    rows = rrujo_rows()
    subjects = sorted({r["subject"] for r in rows})[:3]
    chosen = [r for r in rows if r["subject"] in subjects and r["rr_bpm"] in ("8", "20")]
    assert {r["device"] for r in chosen} == {"rrinervas", "thinklabs"}
    src = tmp_path / "rrujo_subset"
    src.mkdir()
    for device in ("rrinervas", "thinklabs"):
        os.symlink(RRUJO_DIR / device, src / device)
    with (src / "recordings.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)

    segments = import_rrujo(src, tmp_path / "out", seed=3)
    check_segments(tmp_path / "out", segments)
    for subject in subjects:
        mine = [s for s in segments if s.participant == f"rrujo-{subject}"]
        assert {s.source for s in mine} == {"rrujo/rrinervas", "rrujo/thinklabs"}
        assert len({s.split for s in mine}) == 1
    assert sorted({s.split for s in segments}) == ["test", "train", "val"]
    assert {s.rr_bpm for s in segments} == {8.0, 20.0}


@needs_rrujo
def test_rrujo_import_is_reproducible_and_can_point_at_the_originals(tmp_path: Path) -> None:
    import_rrujo(RRUJO_DIR, tmp_path / "a", seed=1, limit=2)
    import_rrujo(RRUJO_DIR, tmp_path / "b", seed=1, limit=2)
    import_rrujo(RRUJO_DIR, tmp_path / "c", seed=2, limit=2)
    text = {name: (tmp_path / name / MANIFEST_NAME).read_text() for name in "abc"}
    assert text["a"] == text["b"]
    assert text["a"] != text["c"]

    original = import_rrujo(RRUJO_DIR, tmp_path / "d", seed=1, limit=2, convert=False)
    assert not (tmp_path / "d" / "audio").exists()
    first = rrujo_rows()[0]
    assert original[0].path == str((RRUJO_DIR / first["path"]).resolve())
    copied = read_manifest(tmp_path / "a")
    assert [(s.start_s, s.end_s) for s in original] == [(s.start_s, s.end_s) for s in copied]


# --- RRuJO layout, synthetic (runs without the real data) ---------------------------------------------


def write_rrujo(root: Path, rows: list[dict[str, str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    fields = ["path", "subject", "device", "rr_bpm", "sample_rate", "duration_s", "sex"]
    with (root / "recordings.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_rrujo_layout_skips_bad_rows_and_files_with_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "rrujo"
    for i, subject in enumerate(["01", "02", "03"]):
        breath_wav(src / "dev" / f"{subject}.flac", 12.0, duration_s=12.0, rate=4_500, seed=i)
    (src / "dev" / "broken.flac").write_bytes(b"fLaC" + b"\x00" * 40)
    write_rrujo(
        src,
        [
            {"path": "dev/01.flac", "subject": "01", "device": "dev", "rr_bpm": "12", "sex": "F"},
            {"path": "dev/02.flac", "subject": "02", "device": "dev", "rr_bpm": "12", "sex": "M"},
            {"path": "dev/03.flac", "subject": "03", "device": "dev", "rr_bpm": "35", "sex": ""},
            {"path": "dev/04.flac", "subject": "04", "device": "dev", "rr_bpm": "fast"},
            {"path": "dev/missing.flac", "subject": "05", "device": "dev", "rr_bpm": "10"},
            {"path": "dev/broken.flac", "subject": "06", "device": "dev", "rr_bpm": "10"},
            {"path": "../outside.flac", "subject": "07", "device": "dev", "rr_bpm": "10"},
        ],
    )
    with caplog.at_level(logging.WARNING, logger="training.importers"):
        report = import_corpus("rrujo", src, tmp_path / "out", seed=0)
    check_segments(tmp_path / "out", report.segments)
    assert report.recordings == 3
    assert len(report.skipped) == 4
    for needle in ("recordings.csv:5", "missing.flac", "broken.flac", "recordings.csv:8"):
        assert any(needle in reason for reason in report.skipped), needle
        assert needle in caplog.text
    assert "skipped 4 file(s)" in report.summary()
    by_subject = {s.participant: s for s in report.segments}
    assert by_subject["rrujo-03"].breath_class == "heavy"
    assert (by_subject["rrujo-01"].gender, by_subject["rrujo-03"].gender) == ("female", "")


def test_rrujo_wrong_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusImportError, match="no such folder"):
        import_rrujo(tmp_path / "absent", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusImportError, match=r"no recordings\.csv"):
        import_rrujo(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "recordings.csv").write_text("file,rate\na.flac,12\n")
    with pytest.raises(CorpusImportError, match="missing columns path, subject, device, rr_bpm"):
        import_rrujo(tmp_path / "odd", tmp_path / "out")
    write_rrujo(tmp_path / "gone", [{"path": "x.flac", "subject": "1", "device": "d", "rr_bpm": "12"}])
    with pytest.raises(CorpusImportError, match=r"no usable recordings \(1 found, 1 skipped\)"):
        import_rrujo(tmp_path / "gone", tmp_path / "out")
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()


# --- BreathMY layout, synthetic fixture ------------------------------------------------------------


def test_breathmy_fixture(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = make_breathmy(tmp_path / "breathmy")
    with caplog.at_level(logging.WARNING, logger="training.importers"):
        report = import_corpus("breathmy", tmp_path / "breathmy", tmp_path / "out", seed=0)
    segments = report.segments
    check_segments(tmp_path / "out", segments)
    assert report.recordings == len(files["good"]) == 7
    assert len(report.skipped) == len(files["bad"]) == 4
    for bad in files["bad"]:
        assert any(str(bad) in reason for reason in report.skipped), bad
        assert str(bad) in caplog.text
    assert ".DS_Store" not in caplog.text and "extras" not in caplog.text

    by_recording = {s.recording: s for s in segments}
    assert set(by_recording) == {f"breathmy/{f.parent.name}/{f.stem}" for f in files["good"]}
    seg = by_recording["breathmy/D_A/40RR_30cm_2023_05_01_s02"]
    assert (seg.rr_bpm, seg.breath_class, seg.participant) == (40.0, "heavy", "breathmy-s02")
    assert seg.source == "breathmy/D_A/30cm"
    assert by_recording["breathmy/D_D/24RR_100cm_2023_05_04_s02"].source == "breathmy/D_D/100cm"
    # s01 and s02 were recorded in two folders each: still one participant, one split.
    s01 = [s for s in segments if s.participant == "breathmy-s01"]
    assert {s.source for s in s01} == {"breathmy/D_A/30cm", "breathmy/D_B/50cm"}
    assert len({s.participant for s in segments}) == 5
    assert sorted({s.split for s in segments}) == ["test", "train", "val"]
    # Files at 8, 16, 44.1 and 48 kHz all became 16 kHz copies.
    for s in segments:
        assert sf.info(audio_path(tmp_path / "out", s)).samplerate == 16_000


def test_breathmy_same_seed_same_corpus(tmp_path: Path) -> None:
    make_breathmy(tmp_path / "src")
    first = import_breathmy(tmp_path / "src", tmp_path / "a", seed=5)
    second = import_breathmy(tmp_path / "src", tmp_path / "b", seed=5)
    assert first == second
    limited = import_breathmy(tmp_path / "src", tmp_path / "c", seed=5, limit=2)
    assert {s.recording for s in limited} == {
        "breathmy/D_A/12RR_30cm_2023_05_01_s01",
        "breathmy/D_A/40RR_30cm_2023_05_01_s02",
    }
    # Cuts are seeded per recording: a recording is cut the same whatever else is imported with it.
    cuts = {(s.recording, s.start_s, s.end_s) for s in first}
    assert {(s.recording, s.start_s, s.end_s) for s in limited} <= cuts


def test_breathmy_wrong_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusImportError, match="no such folder"):
        import_breathmy(tmp_path / "absent", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusImportError, match=r"no D_A\.\.D_D folders"):
        import_breathmy(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "names" / "D_A").mkdir(parents=True)
    (tmp_path / "names" / "D_A" / "breath.wav").write_bytes(b"")
    with pytest.raises(CorpusImportError, match="no usable recordings"):
        import_breathmy(tmp_path / "names", tmp_path / "out")
    with pytest.raises(CorpusImportError, match="unknown corpus layout"):
        import_corpus("coswara", tmp_path / "names", tmp_path / "out")


def test_failed_import_keeps_the_previous_manifest(tmp_path: Path) -> None:
    make_breathmy(tmp_path / "src")
    import_breathmy(tmp_path / "src", tmp_path / "out")
    before = (tmp_path / "out" / MANIFEST_NAME).read_text()
    (tmp_path / "bad" / "D_A").mkdir(parents=True)
    with pytest.raises(CorpusImportError):
        import_breathmy(tmp_path / "bad", tmp_path / "out")
    assert (tmp_path / "out" / MANIFEST_NAME).read_text() == before


def test_copies_that_would_clip_are_scaled_not_clipped(tmp_path: Path) -> None:
    """Resampling a full-scale square wave overshoots 1.0; the 16-bit copy must not wrap or clip."""
    rate = 8_000
    t = np.arange(10 * rate) / rate
    square = np.sign(np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    path = tmp_path / "src" / "D_A" / "12RR_30cm_2023_05_01_s01.wav"
    path.parent.mkdir(parents=True)
    sf.write(path, square, rate, subtype="FLOAT")
    (seg, *_) = import_breathmy(tmp_path / "src", tmp_path / "out")
    copy, _ = sf.read(audio_path(tmp_path / "out", seg))
    resampled = load_audio(path)
    peak = np.max(np.abs(resampled))
    assert peak > 1.05  # the overshoot this test is about
    np.testing.assert_allclose(copy, resampled * 0.999 / peak, atol=1e-4)  # scaled, same waveform
