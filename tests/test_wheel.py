"""The wheel ships the three packages and their data, and none of the test scaffolding.

Built from a copy of the checkout's files (tracked, plus untracked ones git does not ignore), so the
build leaves nothing in the work tree; without build isolation, from what is installed (no downloads).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("training", "coreml", "backend")
# Names that only test scaffolding uses: none of them may appear in the shipped code.
SCAFFOLDING_NAMES = (
    "scratch_postgres_database",
    "hold_before_commit",
    "TEST_HOLD_BEFORE_COMMIT",
    "write_export_file",
)

pytestmark = pytest.mark.slow


def checkout_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know which files are the project's")
    pytest.importorskip("build", reason="the dev extra's `build` is not installed")
    work = tmp_path_factory.mktemp("wheel")
    source, dist = work / "src", work / "dist"
    for name in checkout_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"python -m build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    (built,) = dist.glob("respira-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_holds_the_packages_their_data_and_the_shipped_model(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    wanted = [name for name in checkout_files() if name.split("/")[0] in PACKAGES]
    assert "training/default_model/tclstm32.pt" in wanted  # the shipped model is tracked...
    assert any(name.startswith("backend/templates/") for name in wanted)
    assert any(name.startswith("backend/static/") for name in wanted)
    missing = sorted(set(wanted) - names)
    assert not missing, f"the wheel lacks {missing}"  # ...and shipped, with every template and asset


def test_wheel_holds_no_test_scaffolding(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == set(PACKAGES), top  # no tests/, bench/, demo/, scripts/ or a stray top-level module
    assert not [name for name in names if "synthetic" in name and name.startswith("backend/")]
    for name in names:
        if name.endswith(".py"):
            text = wheel.read(name).decode()
            found = [word for word in SCAFFOLDING_NAMES if word in text]
            assert not found, f"{name} mentions test scaffolding: {found}"
