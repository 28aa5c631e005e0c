"""Helpers that the interruption and data-parallel tests share: preparing a run's token
files once, waiting for a file a background run writes, copying a prepared run, and what two
runs of the same training must agree on: their final checkpoints and the part of
training_metrics.json that does not time anything."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import torch


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


def assert_same_checkpoint(a: dict, b: dict) -> None:
    """Two checkpoints hold the same training, bit for bit: the step, every weight, the
    optimizer's state of every parameter (none missing on either side, every tensor and
    number in it) and every setting of every parameter group (learning rate included)."""
    assert a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    oa, ob = a["optimizer"], b["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]
    params = sorted(i for group in oa["param_groups"] for i in group["params"])
    assert sorted(oa["state"]) == sorted(ob["state"]) == params  # every parameter has its state
    for i in params:
        sa, sb = oa["state"][i], ob["state"][i]
        assert sa.keys() == sb.keys(), i
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), (i, key)
