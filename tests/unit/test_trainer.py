"""The trainer's parts that the chapters drive by hand, and what the library must not do to
the process or the user (settings, questions) behind the entry point's back."""
from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tinylm import pipeline
from tinylm.config import load_preset
from tinylm.errors import ConfigError, Interrupted, TinyLMError, TrainingError
from tinylm.stages import Run
from tinylm.train import Solo, Trainer, lr_at

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
    trainer = Trainer(cfg, _tokens(tmp_path / "tokens"), progress=False)
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
    trainer = Trainer(cfg, _tokens(tmp_path / "tokens"), progress=False)
    x, y = trainer.train_data.batch(np.arange(4))
    step = trainer.train_step(x, y, lr=1e-3)
    assert step.grad_norm > 1e-3 and np.isfinite(step.loss)  # an untrained model's norm is far above


class Keeping(Solo):
    """One process that keeps its checkpoints in memory, and is asked to stop (as by Ctrl-C)
    after ``stop_after`` steps."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.saved: dict[str, dict] = {}
        self.stop_after, self.steps = stop_after, 0

    def batch_loss_and_stop(self, loss, weight, signum):
        self.steps += 1
        return loss, signal.SIGINT if self.steps == self.stop_after else signum

    def save(self, name, state):
        self.saved[name] = copy.deepcopy(state)
        return f"memory:{name}"


def _rates(trainer: Trainer) -> list[float]:
    """The learning rate of every step ``trainer`` takes from now on."""
    rates, step = [], trainer.train_step
    trainer.train_step = lambda x, y, lr, weight=1.0: (rates.append(lr), step(x, y, lr, weight))[1]
    return rates


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_more_epochs_on_resume_continue_the_learning_rate_where_it_was(tmp_path, decay):
    """Resumed with more epochs, a run goes on from the rate it had reached and decays it
    over the steps that remain: no jump back up the cosine, and no second warmup."""
    tokens = _tokens(tmp_path / "tokens", n=1000)  # 16 steps per epoch
    cfg = load_preset("quick", **{**TINY, "epochs": 2, "lr_decay": decay})
    team = Keeping(stop_after=6)
    shorter = Trainer(cfg, tokens, team=team, progress=False)
    before = _rates(shorter)
    with pytest.raises(Interrupted, match="saved checkpoint at step 6 .* to memory:last.pt"):
        shorter.fit()
    state = team.saved["last.pt"]
    longer = Trainer(cfg.replace(epochs=4), tokens, resume_from=state, progress=False)
    after = _rates(longer)
    metrics = longer.fit()
    assert len(before) == state["step"] == 6 and len(after) == longer.total_steps - 6
    assert after[0] == pytest.approx(shorter.schedule(6))  # the rate the shorter run had next
    assert all(b <= a for a, b in zip(after, after[1:]))
    assert after[-1] < after[0] and longer.schedule(longer.total_steps) == pytest.approx(
        cfg.learning_rate * cfg.min_lr_ratio)  # down to the floor at the new end
    assert metrics["resumed"] == [{"at_step": 6, "changed": {"epochs": [2, 4]}}]
    assert metrics["history"][-1]["lr"] == after[-1]


@pytest.mark.parametrize("grad_clip", [1.0, 0.0], ids=["clipped", "not clipped"])
def test_a_gradient_that_is_not_finite_stops_training_before_a_checkpoint_keeps_it(tmp_path, grad_clip):
    """A finite loss with an infinite gradient: the step is not applied, and training stops
    with a clear error before the next checkpoint (which falls on that very step)."""
    cfg = load_preset("quick", **TINY, grad_clip=grad_clip, checkpoint_every=5)
    team = Keeping()
    trainer = Trainer(cfg, _tokens(tmp_path / "tokens", n=1000), team=team, progress=False)
    calls = []

    def poison(grad):  # the fifth backward pass gives this weight an infinite gradient
        calls.append(1)
        return torch.full_like(grad, math.inf) if len(calls) == 5 else grad

    trainer.model.blocks[0].mlp.fc.weight.register_hook(poison)
    with pytest.raises(TrainingError, match="the gradient norm became inf .* at step 4 ") as err:
        trainer.fit()
    assert "learning-rate" in err.value.remedy
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    for name, state in team.saved.items():
        assert all(torch.isfinite(w).all() for w in state["model"].values()), name


def test_a_checkpoint_on_mps_keeps_the_gpu_generator_and_a_resume_restores_it(tmp_path, monkeypatch):
    """Dropout masks on Apple's GPU come from its own generator: an exact resume there needs
    it saved and set back. A CPU trainer stands in for one on a Mac (its device says MPS)."""
    trainer = Trainer(load_preset("quick", **TINY), _tokens(tmp_path / "tokens"), progress=False)
    trainer.device = torch.device("mps")
    drawn, restored = torch.arange(8, dtype=torch.uint8), []
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda *a, **kw: drawn.clone())
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda state, *a, **kw: restored.append(state))
    state = trainer.state_dict()
    assert torch.equal(state["rng_mps"], drawn) and "rng_cuda" not in state
    trainer.load_state_dict(state)
    assert len(restored) == 1 and torch.equal(restored[0], drawn)


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
        tinylm.train.Trainer(cfg, {str(tmp_path / 'tokens')!r}, progress=False)
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


@pytest.mark.parametrize("omp", [None, "3", "0", "many"])
def test_threads_zero_means_omp_num_threads_where_set_else_the_physical_cores(monkeypatch, omp):
    """As PyTorch reads it: the pipeline sets it for chapters that share the cores."""
    from tinylm.runtime import default_threads, physical_cores

    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert default_threads() == (3 if omp == "3" else physical_cores())


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
