"""Test order: the longest files first, so that with one worker per core (``make test``,
pytest-xdist taking whole files) no long file starts last and leaves the other workers idle.
Within a file and among the rest the order stays pytest's own."""
from __future__ import annotations

from pathlib import Path

import pytest

#: Files that take a minute or more on a 2-core machine (``pytest --durations``), longest first.
LONGEST_FIRST = ["test_pipeline.py", "test_distributed.py", "test_interrupt_resume.py",
                 "test_readme.py", "test_bad_input.py", "test_book_runs.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))
