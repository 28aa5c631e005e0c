"""What every test shares: Ctrl-C delivered (below), the default floating-point mode, and the
order: the longest files first, so that with one worker per core (``make test``,
pytest-xdist taking whole files) no long file starts last and leaves the other workers idle.
Within a file and among the rest the order stays pytest's own."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

#: Files that take a minute or more on a 2-core machine (``pytest --durations``), longest first.
LONGEST_FIRST = ["test_pipeline.py", "test_distributed.py", "test_interrupt_resume.py",
                 "test_readme.py", "test_bad_input.py", "test_book_runs.py"]


def pytest_configure(config: pytest.Config) -> None:
    """A suite started as a background job of a shell without job control (``make test &``)
    inherits SIGINT ignored, and so would every command a test starts: the tests of Ctrl-C
    would see nothing happen. They test what a terminal's Ctrl-C does, so it is delivered."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))


@pytest.fixture(autouse=True)
def _subnormals_kept_between_tests():
    """A command run in this process (``tinylm.cli.main(["check", ...])``) makes the settings of
    a training process, among them flushing subnormal floats to zero (``runtime.setup_process``).
    That is the whole process's floating-point mode: a later test of the same worker would run
    under it (hypothesis' float strategies cannot). Each test starts from the default."""
    yield
    torch = sys.modules.get("torch")  # never imported here for a test that did not
    if torch is not None:
        torch.set_flush_denormal(False)
