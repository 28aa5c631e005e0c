"""A baseline commit's code beside this checkout's, for benchmarks that alternate the two.

    with baseline.worktree("0c2b0f3", work / "baseline-code") as (code, commit):
        ...  # run with PYTHONPATH=code, and with this checkout, in turn
"""
from __future__ import annotations

import platform
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def worktree(commit: str, folder: Path) -> Iterator[tuple[Path, str]]:
    """``commit`` checked out (detached) in ``folder`` for the block, as a git worktree of this
    checkout; yields the folder and the commit's full hash, and removes the worktree after."""
    if folder.exists():  # left by an interrupted benchmark
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, check=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), commit], cwd=ROOT,
                   check=True, capture_output=True)
    try:
        yield folder, subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, check=True,
                                     capture_output=True, text=True).stdout.strip()
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT)


def cpu_name() -> str:
    """This machine's CPU model, recorded beside every figure (they compare only within it)."""
    return next((line.split(":", 1)[1].strip() for line in
                 Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), platform.processor())


def alternate(rounds: int) -> Iterator[tuple[int, str]]:
    """``(round, "baseline" or "new")`` in the order a benchmark runs them: both in each round,
    the first of the pair alternating, so that neither always follows the other."""
    for r in range(rounds):
        for name in (("baseline", "new") if r % 2 == 0 else ("new", "baseline")):
            yield r, name
