"""Suite-wide test order: the longest files first.

``scripts/test`` runs the suite on every core with pytest-xdist, one file per worker at a time
(``--dist loadfile``: a file's module fixtures, such as the quick demo run, are built once), in the
order set here (``--no-loadscope-reorder``; by default xdist starts the files with the most tests
first). A long file started last would leave one worker running alone at the end, so these start
first; every other file keeps its place.
"""

from __future__ import annotations

import pytest

# measured with --durations (docs/benchmarks.md: "The test suite"); longest first
LONGEST_FILES_FIRST = (
    "test_demo.py",
    "test_streaming_estimator.py",
    "test_verify.py",
    "test_experiments.py",
    "test_demo_parts.py",
    "test_export.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort
