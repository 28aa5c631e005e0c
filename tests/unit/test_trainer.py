"""The trainer's parts that the chapters drive by hand, and what the library must not do to
the process or the user (settings, questions) behind the entry point's back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tinylm import pipeline
from tinylm.config import load_preset
from tinylm.errors import ConfigError, TinyLMError
from tinylm.stages import Run
from tinylm.train import Trainer, lr_at

TINY = dict(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=32, batch_size=4,
            epochs=1, warmup_steps=3, dropout=0.0, languages=["en"])


def _tokens(folder: Path, vocab_size: int = 300, n: int = 4000) -> Path:
    """Random token files and a meta.json, enough for a Trainer."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = np.random.default_rng(0).integers(0, vocab_size, n).astype(np.uint16)
    for split in ("train", "val"):
        tokens.tofile(folder / f"{split}.bin")
    meta = {"vocab_size": vocab_size, "special_ids": {"<|endoftext|>": 0, "<|en|>": 1},
            "spans": {"train": [[0, n, "en"]], "val": [[0, n, "en"]]},
            "splits": {"val": {"en": {"tokens_per_byte": 0.3}}}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_each_run_steps_call_is_a_whole_schedule(tmp_path):
    cfg = load_preset("quick", **TINY)
    trainer = Trainer(cfg, _tokens(tmp_path / "tokens"), tmp_path / "out", progress=False)
    rates: list[float] = []
    record = lambda t: rates.append(t.optimizer.param_groups[0]["lr"])  # noqa: E731
    trainer.run_steps(12, record)
    first, rates[:] = list(rates), []
    trainer.run_steps(12, record)
    expected = [lr_at(i, 12, cfg.learning_rate, cfg.warmup_steps, cfg.min_lr_ratio) for i in range(12)]
    assert first == pytest.approx(expected)
    assert rates == pytest.approx(expected), "a second call must warm up again, not sit at the floor"
    assert trainer.step == 24


def test_train_step_reports_the_norm_before_clipping(tmp_path):
    cfg = load_preset("quick", **TINY, grad_clip=1e-3)
    trainer = Trainer(cfg, _tokens(tmp_path / "tokens"), tmp_path / "out", progress=False)
    x, y = trainer.train_data.batch(np.arange(4))
    step = trainer.train_step(x, y, lr=1e-3)
    assert step.grad_norm > 1e-3 and np.isfinite(step.loss)  # an untrained model's norm is far above


def test_library_makes_no_process_wide_settings(tmp_path):
    """Importing tinylm and building a Trainer leave OpenMP, threads and subnormals alone."""
    _tokens(tmp_path / "tokens")
    code = textwrap.dedent(f"""
        import json, os
        import tinylm, tinylm.train
        import torch
        threads = torch.get_num_threads()
        from tinylm.config import load_preset
        cfg = load_preset("quick", **{TINY!r}, threads=1)
        tinylm.train.Trainer(cfg, {str(tmp_path / 'tokens')!r}, {str(tmp_path / 'out')!r}, progress=False)
        print(json.dumps({{"omp": os.environ.get("OMP_WAIT_POLICY"),
                          "threads_kept": torch.get_num_threads() == threads,
                          "subnormal_kept": (torch.tensor([1e-39]) * 1.0).item() != 0.0}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "omp": None, "threads_kept": True, "subnormal_kept": True}


def test_setup_process_makes_them(tmp_path):
    code = ("import json, os, torch\nfrom tinylm.runtime import setup_process\n"
            "done = setup_process(1)\n"
            "print(json.dumps([done['threads'], torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'],"
            " (torch.tensor([1e-39]) * 1.0).item()]))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [1, 1, "PASSIVE", 0.0]


def test_the_library_never_asks(tmp_path, monkeypatch):
    """Undecided resume with checkpoints present is refused, even on a terminal: asking is
    the command line's job."""
    run = Run(tmp_path / "run", load_preset("quick"))
    (run.checkpoints_dir).mkdir(parents=True)
    (run.checkpoints_dir / "last.pt").write_bytes(b"x")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("the library asked the user"))
    with pytest.raises(TinyLMError, match="holds checkpoints of an earlier run") as err:
        run.decide_resume()
    assert "--resume" in err.value.remedy and "--fresh" in err.value.remedy


def test_making_a_run_touches_no_file(tmp_path):
    Run(tmp_path / "nested" / "run", load_preset("quick"))
    assert not (tmp_path / "nested").exists()


@pytest.mark.parametrize("selection, names", [
    (["5", "05"], ["05_training"]), (["05_training", "5"], ["05_training"]),
    (["10", "1"], ["01_overview", "10_budgets"]), ([" 7 "], ["07_evaluation"])])
def test_chapter_selection(selection, names):
    assert [p.stem for p in pipeline.chapter_paths(selection)] == names


@pytest.mark.parametrize("selection", [["12"], ["0"], ["5", "x"], [""], ["training"]])
def test_unknown_chapters_are_refused(selection):
    with pytest.raises(ConfigError, match="unknown chapter"):
        pipeline.chapter_paths(selection)


@pytest.mark.parametrize("before", [None, "4242"])
def test_the_pipeline_restores_the_lock_variable(monkeypatch, before):
    if before is None:
        monkeypatch.delenv("TINYLM_LOCK_PID", raising=False)
    else:
        monkeypatch.setenv("TINYLM_LOCK_PID", before)
    with pipeline._environment("TINYLM_LOCK_PID", "1"):
        assert os.environ["TINYLM_LOCK_PID"] == "1"
    assert os.environ.get("TINYLM_LOCK_PID") == before
