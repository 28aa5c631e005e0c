"""Helpers that the interruption and data-parallel tests share: preparing a run's token
files once, waiting for a file a background run writes, copying a prepared run, and the part
of training_metrics.json that two runs of the same training must agree on."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path


def prepare(tmp_path_factory, cfg) -> Path:
    """Corpus, tokenizer and token files of ``cfg`` in a fresh run directory, for copying."""
    from tinylm.stages import Run

    run_dir = tmp_path_factory.mktemp("prepared") / "run"
    Run(run_dir, cfg, progress=False).tokens()
    return run_dir


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.002)


def copy(prepared: Path, to: Path) -> Path:
    shutil.copytree(prepared, to)
    return to


def comparable(metrics: dict) -> dict:
    """training_metrics.json without what may differ between runs: timings and the resume log."""
    m = json.loads(json.dumps(metrics))
    m.pop("timing")
    m.pop("resumed")
    for record in m["history"]:
        record.pop("tokens_per_second")
    return m
