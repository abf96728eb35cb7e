"""The ``python -m training data ...`` contract: output, files written, exit codes and error lines."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import matplotlib.image
import pytest
from corpus_fixtures import RRUJO_DIR, make_breathmy

from training.cli import main
from training.manifest import MANIFEST_NAME, Segment, read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[2]


def labelled_corpus(root: Path, with_stages: bool) -> Path:
    """A manifest only (stats never opens the audio): known counts to check the printout against."""
    rows = [
        # (rr_bpm, class, stage, split, environment, noisy, gender, source)
        (0.0, "none", 1, "train", "indoor", 0, "female", "synth"),
        (12.0, "normal", 1, "train", "indoor", 1, "female", "synth"),
        (16.0, "normal", 4, "val", "outdoor", 0, "male", "synth"),
        (44.0, "heavy", 2, "test", "outdoor", 1, "", "rrujo/thinklabs"),
    ]
    segments = [
        Segment(
            path=f"audio/{i}.flac",
            start_s=0.0,
            end_s=6.0,
            rr_bpm=rr,
            respiration_count=rr * 0.1,
            breath_class=cls,
            stage=stage if with_stages else None,
            split=split,
            environment=env,
            noisy=noisy,
            gender=gender,
            source=source,
            participant=f"p{i}",
            recording=f"r{i}",
        )
        for i, (rr, cls, stage, split, env, noisy, gender, source) in enumerate(rows)
    ]
    write_manifest(segments, root)
    return root


def test_stats_prints_counts_and_writes_the_histogram(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus = labelled_corpus(tmp_path / "corpus", with_stages=True)
    assert main(["data", "stats", str(corpus)]) == 0
    out = capsys.readouterr().out
    lines = {line.split(":")[0]: line for line in out.splitlines()}
    assert "segments: 4 (0.01 h), participants: 4, recordings: 4" in out
    assert lines["breath_class"].split()[1:] == ["none=1", "normal=2", "heavy=1"]
    assert lines["stage"].split()[1:] == ["1=2", "2=1", "3=0", "4=1", "-=0"]
    assert lines["split"].split()[1:] == ["train=2", "val=1", "test=1", "-=0"]
    assert lines["environment"].split()[1:] == ["indoor=2", "outdoor=2"]
    assert lines["noisy"].split()[1:] == ["0=2", "1=2"]
    assert lines["gender"].split()[1:] == ["female=2", "male=1", "other=0", "-=1"]
    assert lines["source"].split()[1:] == ["rrujo/thinklabs=1", "synth=3"]
    assert lines["rr_bpm"].split()[1:] == ["mean=18.00", "min=0.00", "max=44.00"]
    png = corpus / "rr_histogram.png"
    assert f"histogram: {png}" in out
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_stats_without_stages_colours_by_split(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus = labelled_corpus(tmp_path / "corpus", with_stages=False)
    assert main(["data", "stats", str(corpus)]) == 0
    assert "-=4" in capsys.readouterr().out
    assert (corpus / "rr_histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_import_breathmy_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_breathmy(tmp_path / "src")
    out_dir = tmp_path / "out"
    argv = ["data", "import", "breathmy", str(tmp_path / "src"), "--out", str(out_dir), "--seed", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    segments = read_manifest(out_dir)
    assert f"{len(segments)} segments" in out and str(out_dir / MANIFEST_NAME) in out
    assert "from 7 recordings of 5 participants" in out
    assert "skipped 4 file(s):" in out and "readme.txt" in out


@pytest.mark.skipif(
    not (RRUJO_DIR / "recordings.csv").is_file(), reason=f"RRuJO data not found at {RRUJO_DIR}"
)
def test_import_rrujo_command_as_a_subprocess(tmp_path: Path) -> None:
    """The real entry point (``python -m training``), as other tools call it."""
    cmd = [sys.executable, "-m", "training", "data", "import", "rrujo", str(RRUJO_DIR)]
    done = subprocess.run(
        [*cmd, "--out", str(tmp_path), "--limit", "2", "--no-convert"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "from 2 recordings of 2 participants" in done.stdout
    assert "import rrujo" in done.stderr  # the progress bar
    assert all(Path(s.path).is_absolute() for s in read_manifest(tmp_path))


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "stats", "{tmp}/absent"],
        ["data", "import", "rrujo", "{tmp}/absent", "--out", "{tmp}/out"],
        ["data", "import", "breathmy", "{tmp}/absent", "--out", "{tmp}/out"],
        ["data", "augment", "{tmp}/absent", "--out", "{tmp}/out", "--copies", "2", "--seed", "1"],
    ],
)
def test_missing_folder_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str]
) -> None:
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert f"{tmp_path}/absent: no such folder" in err
    assert "Traceback" not in err


def test_wrong_layout_and_bad_manifest_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "plain").mkdir()
    assert main(["data", "import", "breathmy", str(tmp_path / "plain"), "--out", str(tmp_path / "o")]) == 2
    assert "no D_A..D_D folders" in capsys.readouterr().err
    assert main(["data", "stats", str(tmp_path / "plain")]) == 2
    assert "no manifest here" in capsys.readouterr().err
    corpus = labelled_corpus(tmp_path / "corpus", with_stages=True)
    text = (corpus / MANIFEST_NAME).read_text().replace(",44,", ",fast,")
    (corpus / MANIFEST_NAME).write_text(text)
    assert main(["data", "stats", str(corpus)]) == 2
    err = capsys.readouterr().err
    assert f"{corpus / MANIFEST_NAME}:5: rr_bpm 'fast'" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["data"],
        ["data", "synth", "--segments", "10"],  # --out is required
        ["data", "synth", "--out", "x", "--segments", "0"],
        ["data", "import", "coswara", "src", "--out", "x"],
        ["data", "augment", "src", "--out", "x", "--copies", "two"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def fake_module(monkeypatch: pytest.MonkeyPatch, name: str, function: str, calls: list) -> None:
    """Stand in for a data builder: record the call, write a one-row corpus where it was asked to."""

    def build(*args, **kwargs):
        calls.append((args, kwargs))
        labelled_corpus(Path(args[1] if function == "augment_corpus" else args[0]), with_stages=False)

    module = types.ModuleType(name)
    setattr(module, function, build)
    monkeypatch.setitem(sys.modules, name, module)


def test_synth_and_augment_pass_their_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    calls: list = []
    fake_module(monkeypatch, "training.synth", "build_synthetic_corpus", calls)
    fake_module(monkeypatch, "training.augment", "augment_corpus", calls)
    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--segments", "12", "--seed", "7"]) == 0
    assert calls[-1] == ((out, 12, 7), {"progress": True})
    assert f"4 segments (0.01 h) in {out / MANIFEST_NAME}" in capsys.readouterr().out

    aug = tmp_path / "aug"
    assert main(["data", "augment", str(out), "--out", str(aug), "--copies", "3", "--seed", "9"]) == 0
    assert calls[-1] == ((out, aug, 3, 9), {"progress": True})
    assert str(aug / MANIFEST_NAME) in capsys.readouterr().out


def test_synth_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The real generator behind the command, tiny: a manifest whose audio exists."""
    pytest.importorskip("training.synth", reason="training.synth is not written yet")
    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--segments", "4", "--seed", "1"]) == 0
    segments = read_manifest(out)
    assert len(segments) == 4
    assert all((out / s.path).is_file() for s in segments)
    assert main(["data", "stats", str(out)]) == 0
    assert "segments: 4" in capsys.readouterr().out
