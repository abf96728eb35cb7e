"""The sample rate is defined once, by the front-end (training.frontend.SAMPLE_RATE_HZ); everything else
imports it. A literal 16000 anywhere else in the shipped code, the demo or the benches is a second
definition waiting to disagree with the first.

Excepted: tests/ (their fixtures write audio at stated rates on purpose, independently of the constant,
so changing it shows up as failures) and documentation (not code). backend/ imports nothing from
training, and has no 16000: its only business with audio rates would be something else entirely.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFINING_MODULE = "training/frontend.py"
LITERAL = re.compile(r"(?<![\w.])(16_?000(\.0*)?|16(\.0*)?e3)(?![\w.])")


def python_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the project's files")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [name for name in listed if (ROOT / name).is_file()]


def literal_lines(name: str) -> list[str]:
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    return [f"{name}:{i}: {line.strip()}" for i, line in enumerate(lines, 1) if LITERAL.search(line)]


def test_the_sample_rate_is_written_as_a_number_only_where_it_is_defined() -> None:
    files = python_files()
    assert DEFINING_MODULE in files and "training/audio.py" in files  # the listing found the code
    found = [hit for name in files if not name.startswith("tests/") for hit in literal_lines(name)]
    definition = [hit for hit in found if hit.startswith(f"{DEFINING_MODULE}:")]
    assert len(definition) == 1 and "SAMPLE_RATE_HZ = 16_000" in definition[0], definition
    others = [hit for hit in found if not hit.startswith(f"{DEFINING_MODULE}:")]
    assert not others, "import training.frontend.SAMPLE_RATE_HZ instead of:\n" + "\n".join(others)


def test_the_pattern_finds_the_spellings_of_sixteen_thousand() -> None:
    for text in ("x = 16000", "f(16_000)", "rate=16e3", "a / 16000.", "16000.0 / n", "16.0e3"):
        assert LITERAL.search(text), text
    for text in ("160000", "116000", "x16000", "16000_1", "16000.5", "1.16000"):
        assert not LITERAL.search(text), text
