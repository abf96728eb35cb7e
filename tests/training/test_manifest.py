"""The manifest contract: round trip, row/column-naming validation, paper segmentation, participant splits."""

from __future__ import annotations

import csv
import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from training.manifest import (
    COLUMNS,
    MANIFEST_NAME,
    REQUIRED_COLUMNS,
    ManifestError,
    Segment,
    assign_splits,
    audio_path,
    breath_class_for,
    random_segments,
    read_manifest,
    write_manifest,
)


def segment(**changes) -> Segment:
    base = Segment(
        path="audio/p01_0001.flac",
        start_s=0.0,
        end_s=5.25,
        rr_bpm=14.2857142857,
        respiration_count=1.25,
        breath_class="normal",
        noisy=1,
        stage=2,
        participant="p01",
        gender="female",
        environment="outdoor",
        source="synth",
        split="train",
        snr_db=17.5,
        recording="p01-rec1",
    )
    return dataclasses.replace(base, **changes)


def test_contract_columns_come_first() -> None:
    assert REQUIRED_COLUMNS == [
        "path", "start_s", "end_s", "rr_bpm", "respiration_count", "breath_class", "noisy", "stage",
        "participant", "gender", "environment", "source",
    ]  # fmt: skip
    assert COLUMNS[:12] == REQUIRED_COLUMNS


def test_round_trip(tmp_path: Path) -> None:
    rows = [
        segment(),
        segment(stage=None, snr_db=None, split="", gender="", noisy=0, breath_class="heavy", rr_bpm=42.0),
        # Long recordings keep millisecond segment boundaries.
        segment(path="/data/long.wav", start_s=3_723.457, end_s=3_729.004, recording="long"),
        segment(breath_class="none", rr_bpm=0.0, respiration_count=0.0),
    ]
    out = write_manifest(rows, tmp_path)
    assert out == tmp_path / MANIFEST_NAME
    back = read_manifest(tmp_path)
    assert len(back) == len(rows)
    for got, want in zip(back, rows, strict=True):
        for field in COLUMNS:
            g, w = getattr(got, field), getattr(want, field)
            if isinstance(w, float):
                assert g == pytest.approx(w, rel=1e-9, abs=1e-9), field
            else:
                assert g == w, field
    assert read_manifest(out)[0] == back[0]  # the CSV path itself works too


def test_write_refuses_a_bad_row_and_keeps_the_old_manifest(tmp_path: Path) -> None:
    write_manifest([segment()], tmp_path)
    before = (tmp_path / MANIFEST_NAME).read_text()
    with pytest.raises(ManifestError, match=r"row 3: breath_class 'panting'"):
        write_manifest([segment(), segment(breath_class="panting")], tmp_path)
    assert (tmp_path / MANIFEST_NAME).read_text() == before


def rewrite(tmp_path: Path, column: str, value: str, row: int = 1) -> Path:
    """Write two good rows, then set ``column`` of data row ``row`` (0-based) to ``value`` in the CSV text."""
    write_manifest([segment(), segment(start_s=5.25, end_s=10.0)], tmp_path)
    path = tmp_path / MANIFEST_NAME
    with path.open(newline="") as f:
        table = list(csv.DictReader(f))
    table[row][column] = value
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    return path


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("rr_bpm", "fast"),
        ("rr_bpm", "130"),
        ("start_s", "-1"),
        ("end_s", "1.0"),
        ("respiration_count", "-2"),
        ("breath_class", "wheezy"),
        ("noisy", "yes"),
        ("noisy", "2"),
        ("stage", "5"),
        ("stage", "two"),
        ("environment", "underwater"),
        ("split", "holdout"),
        ("gender", "unknown-value"),
        ("snr_db", "loud"),
        ("path", ""),
    ],
)
def test_validation_errors_name_the_row_and_the_column(tmp_path: Path, column: str, value: str) -> None:
    path = rewrite(tmp_path, column, value)
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path)
    message = str(info.value)
    assert f"{path}:3" in message  # file line 3 = the second data row
    assert column in message


def test_missing_columns_are_listed(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text("path,start_s,end_s\na.wav,0,5\n")
    with pytest.raises(ManifestError, match="missing columns rr_bpm, respiration_count, breath_class"):
        read_manifest(tmp_path)


def test_missing_manifest_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(tmp_path / "nowhere")


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    text = ",".join(REQUIRED_COLUMNS) + "\na.wav,0,5,12,1,normal,0,,p1,,,synth\n"
    (tmp_path / MANIFEST_NAME).write_text(text)
    (seg,) = read_manifest(tmp_path)
    assert (seg.split, seg.snr_db, seg.recording) == ("", None, "")
    assert (seg.environment, seg.stage) == ("indoor", None)


def test_audio_path_is_relative_to_the_corpus_unless_absolute(tmp_path: Path) -> None:
    assert audio_path(tmp_path, segment(path="audio/x.flac")) == tmp_path / "audio/x.flac"
    assert audio_path(tmp_path, segment(path="/elsewhere/x.flac")) == Path("/elsewhere/x.flac")


def test_breath_class_thresholds() -> None:
    assert [breath_class_for(r) for r in (0.0, 4.9, 5.0, 30.0, 30.1, 60.0)] == [
        "none", "none", "normal", "normal", "heavy", "heavy",
    ]  # fmt: skip
    assert breath_class_for(27.0, heavy_threshold_bpm=25.0) == "heavy"


@pytest.mark.parametrize("duration_s", [0.0, 3.99, 4.0, 6.5, 11.0, 60.0, 61.37, 3_600.0])
def test_random_segments_are_4_to_7_s_consecutive_and_inside(duration_s: float) -> None:
    for seed in range(200):
        cuts = random_segments(duration_s, np.random.default_rng(seed))
        for start, end in cuts:
            assert 4.0 - 1e-9 <= end - start <= 7.0 + 1e-9, (seed, start, end)  # float subtraction
            assert start >= 0.0 and end <= duration_s
        for (_, end), (next_start, _) in itertools.pairwise(cuts):
            assert next_start >= end  # no overlap
        if cuts:
            assert duration_s - cuts[-1][1] < 4.0  # only a remainder too short for a segment is dropped
        else:
            assert duration_s < 4.0 + 1e-9 or duration_s == 0.0


def test_random_segments_cover_a_minute_with_about_ten_segments() -> None:
    counts = [len(random_segments(60.0, np.random.default_rng(seed))) for seed in range(100)]
    assert min(counts) >= 8 and max(counts) <= 15
    lengths = [e - s for seed in range(100) for s, e in random_segments(60.0, np.random.default_rng(seed))]
    assert 5.0 < np.mean(lengths) < 6.0  # uniform 4-7 s, slightly shortened by the clamped last cut
    assert random_segments(60.0, np.random.default_rng(1)) == random_segments(60.0, np.random.default_rng(1))


def corpus(n_participants: int, per_participant: int = 3) -> list[Segment]:
    return [
        segment(participant=f"p{p:02d}", split="", start_s=5.0 * i, end_s=5.0 * i + 5.0)
        for p in range(n_participants)
        for i in range(per_participant)
    ]


def split_of_participants(segments: list[Segment]) -> dict[str, set[str]]:
    splits: dict[str, set[str]] = {}
    for seg in segments:
        splits.setdefault(seg.participant, set()).add(seg.split)
    return splits


def test_assign_splits_is_participant_disjoint_and_sized_by_fractions() -> None:
    segments = assign_splits(corpus(21), seed=4)
    by_participant = split_of_participants(segments)
    assert all(len(s) == 1 for s in by_participant.values())
    sizes = {name: sum(s == {name} for s in by_participant.values()) for name in ("train", "val", "test")}
    assert sizes == {"train": 15, "val": 3, "test": 3}


def test_assign_splits_is_reproducible_by_seed_and_varies_with_it() -> None:
    first = [s.split for s in assign_splits(corpus(12), seed=9)]
    assert first == [s.split for s in assign_splits(corpus(12), seed=9)]
    others = {tuple(s.split for s in assign_splits(corpus(12), seed=seed)) for seed in range(10)}
    assert len(others) > 1


def test_assign_splits_with_few_participants() -> None:
    assert {s.split for s in assign_splits(corpus(2), seed=0)} == {"train"}
    three = split_of_participants(assign_splits(corpus(3), seed=0))
    assert sorted(next(iter(s)) for s in three.values()) == ["test", "train", "val"]
