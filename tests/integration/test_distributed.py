"""Data-parallel training: processes started by torchrun train like one process with the
whole batch, stop together, and resume exactly.

Every run is small (one layer of width 32, two epochs of 56 steps), in fp32 with dropout 0
and one thread per process, so that "the same" can be checked number by number. torchrun
listens on 127.0.0.1 only: ``--standalone`` picks a free port, and the two-machine test
binds one first. Every wait is bounded.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tinylm import cli, distributed
from tinylm.checkpoint import load_checkpoint
from tinylm.config import load_preset
from tinylm.data import EpochSampler
from tinylm.errors import ConfigError

from run_helpers import assert_same_checkpoint, comparable, copy, prepare, wait_for

CLI = [sys.executable, "-m", "tinylm.cli"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TINY = dict(bytes_per_language=30_000, vocab_size=512, n_layer=1, n_embd=32, n_head=2,
            block_size=32, batch_size=16, epochs=2, warmup_steps=5, threads=1, dtype="fp32",
            dropout=0.0, checkpoint_every=7)
CFG = load_preset("quick", **TINY)
#: one process per core at most, and no torchrun warning about it
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def flags(**changes) -> list[str]:
    values = {**TINY, **changes}
    return ["--preset", "quick"] + [x for k, v in values.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def tinylm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=timeout, env=ENV)


def start(run_dir: Path, log: Path, *args: str) -> subprocess.Popen:
    """``tinylm train`` in the background; stderr goes to ``log``."""
    return subprocess.Popen([*CLI, "train", *args, "--output-dir", str(run_dir), "--no-eval"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"), env=ENV)


def ranks_of(launcher: subprocess.Popen, n: int = 2, timeout: float = 60) -> dict[int, psutil.Process]:
    """The training processes under a launcher (it starts torchrun, which starts them), by rank."""
    deadline = time.monotonic() + timeout
    while True:
        found = {int(p.environ().get("RANK", -1)): p
                 for p in psutil.Process(launcher.pid).children(recursive=True)
                 if "RANK" in p.environ()}
        if len(found) == n:
            return found
        assert time.monotonic() < deadline, f"found ranks {sorted(found)}"
        time.sleep(0.01)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "final.pt")["model"]


def assert_same_training(run: Path, reference: Path, *, same_nproc: bool = True) -> None:
    """Bit for bit: final weights, optimizer state, every figure of training_metrics.json
    (but the processes per machine, ``nproc``, unless ``same_nproc``)."""
    assert_same_checkpoint(*(load_checkpoint(d / "checkpoints" / "final.pt") for d in (run, reference)))
    ma, mb = (json.loads((d / "training_metrics.json").read_text()) for d in (run, reference))
    assert ma["status"] == "complete"
    if not same_nproc:
        ma["hyperparameters"].pop("nproc"), mb["hyperparameters"].pop("nproc")
    assert comparable(ma) == comparable(mb)


def assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Every weight within 1e-4 of its norm, but the attention's key bias.

    The data-parallel sums run in another order (each process sums its half of the batch, then
    the halves are added), so the numbers differ in the last bits, ~1e-6 after 112 steps. The
    key bias has a true gradient of exactly 0 (a softmax ignores a constant added to every
    score), so its gradient is rounding noise, which Adam divides by its own size into steps
    of up to the learning rate: it drifts apart without changing anything the model computes.
    """
    d = a["blocks.0.attn.qkv.bias"].numel() // 3
    for name in a:
        x, y = a[name], b[name]
        if name.endswith("attn.qkv.bias"):
            x, y = torch.cat([x[:d], x[2 * d:]]), torch.cat([y[:d], y[2 * d:]])
        assert (x - y).norm() <= 1e-4 * x.norm(), name


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Corpus, tokenizer and token files of the tiny configuration, built once."""
    return prepare(tmp_path_factory, CFG)


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory) -> Path:
    """An uninterrupted run in two processes, started by ``tinylm train --nproc 2``."""
    run_dir = copy(prepared, tmp_path_factory.mktemp("reference") / "run")
    out = tinylm("train", *flags(), "--nproc", "2", "--output-dir", str(run_dir), "--no-eval", "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


# ------------------------------------------------------------ one process, or two
WORKER = textwrap.dedent("""
    # Trains with Trainer.fit, recording the loss every step returns from its all-reduce,
    # in one process or, under torchrun, in several.
    import json, sys
    from contextlib import nullcontext

    from tinylm import distributed
    from tinylm.config import Config
    from tinylm.evaluate import evaluate
    from tinylm.runtime import setup_process
    from tinylm.train import Trainer

    cfg = Config.from_dict(json.loads(sys.argv[1]))
    losses, agree = [], distributed.agree

    def recording_agree(value, signum):
        total, signum = agree(value, signum)
        losses.append(total)
        return total, signum

    distributed.agree = recording_agree
    setup_process(1)
    with distributed.process_group("cpu") if distributed.launched() else nullcontext():
        trainer = Trainer(cfg, sys.argv[2], team=distributed.Team(sys.argv[3]), progress=False)
        trainer.fit()
        sharded = trainer.evaluate()
        whole = evaluate(trainer.model, trainer.val_data, trainer.meta["spans"]["val"], cfg.languages,
                         {l: v["tokens_per_byte"] for l, v in trainer.meta["splits"]["val"].items()},
                         batch_size=cfg.batch_size)  # one process's figures, on this process alone
        if distributed.is_master():
            json.dump({"losses": losses, "sharded": sharded, "whole": whole},
                      open(sys.argv[3] + "/record.json", "w"))
""")


@pytest.mark.parametrize("batch_size", [32, 885], ids=["2 x 16 against 1 x 32",
                                                       "a last batch of 1 window for 2 processes"])
def test_two_processes_step_like_one_process_with_the_whole_batch(prepared, tmp_path, batch_size):
    """2 processes x 16 windows against 1 process x 32 windows: the same loss at every step,
    the same weights at the end, and sharded evaluation equal to one process's. With 886
    training windows in batches of 885, the second batch of each epoch leaves one process
    without a window: it must step with weight 0 and still join the all-reduce."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    cfg = CFG.replace(batch_size=batch_size)
    args = [str(worker), json.dumps(cfg.to_dict()), str(prepared / "tokens")]
    one, two = tmp_path / "one", tmp_path / "two"
    for out, launcher in ((one, []), (two, [*TORCHRUN, "--standalone", "--nproc-per-node", "2"])):
        out.mkdir()
        done = subprocess.run([*(launcher or [sys.executable]), *args, str(out)], env=ENV,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = (json.loads((d / "record.json").read_text()) for d in (one, two))
    metrics = json.loads((two / "training_metrics.json").read_text())
    assert metrics["data"]["train_windows"] == 886  # what the batch sizes above were chosen for
    steps = metrics["data"]["steps_per_epoch"]
    assert len(a["losses"]) == len(b["losses"]) == 2 * steps + 2  # every step, and after each epoch
    # float32 sums in another order: measured at most 2e-7 relative over 112 steps of 16 windows
    # (median 5e-8); 1e-5 leaves room for other CPUs' kernels, and one window more or less in a
    # batch would change the loss by far more
    np.testing.assert_allclose(b["losses"], a["losses"], rtol=1e-5)
    assert_close_weights(weights(one), weights(two))
    # the same model, evaluated in two shards and summed, or whole: the same figures
    for lang, figures in b["whole"]["by_lang"].items():
        assert b["sharded"]["by_lang"][lang] == pytest.approx(figures, rel=1e-12)
    assert b["sharded"]["loss"] == pytest.approx(b["whole"]["loss"], rel=1e-12)
    assert b["whole"]["loss"] == pytest.approx(a["whole"]["loss"], rel=1e-5)
    assert metrics["data"]["world_size"] == 2 and metrics["data"]["global_batch_size"] == batch_size
    state = load_checkpoint(two / "checkpoints" / "final.pt")
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2


def test_two_machines_on_localhost_train_like_one_launch_of_two_processes(prepared, reference, tmp_path):
    """Two torchrun launches of one process each, meeting through c10d rendezvous, as two
    machines sharing the run directory would: the same training, bit for bit."""
    run = copy(prepared, tmp_path / "run")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = [subprocess.Popen([*TORCHRUN, "--nnodes", "2", "--node-rank", str(i), "--nproc-per-node", "1",
                               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                               "-m", "tinylm.cli", "train", *flags(), "--output-dir", str(run),
                               "--no-eval", "--quiet", "--fresh"],
                              env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / f"node{i}.txt", "w"))
             for i in range(2)]
    try:
        codes = [node.wait(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert codes == [0, 0], [(tmp_path / f"node{i}.txt").read_text()[-2000:] for i in range(2)]
    assert_same_training(run, reference, same_nproc=False)
    metrics = json.loads((run / "training_metrics.json").read_text())
    assert metrics["hyperparameters"]["nproc"] == 1 and metrics["data"]["world_size"] == 2


# ------------------------------------------------------------ stopping
@pytest.fixture(scope="module")
def interrupted(prepared, tmp_path_factory) -> tuple[Path, int, str]:
    """A two-process run stopped by SIGINT to ``tinylm train --nproc 2`` in epoch 1: the run
    directory, the step, and the launcher's stderr."""
    run = copy(prepared, tmp_path_factory.mktemp("interrupted") / "run")
    log = run.parent / "stderr.txt"
    launcher = start(run, log, *flags(), "--nproc", "2")
    try:
        wait_for(run / "checkpoints" / "last.pt", launcher)  # the step-7 checkpoint: mid-epoch
        processes = [psutil.Process(launcher.pid), *ranks_of(launcher).values()]
        torchrun = psutil.Process(launcher.pid).children()
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=120) == 130
    finally:
        launcher.kill()
    gone, alive = psutil.wait_procs([*processes, *torchrun], timeout=30)
    assert not alive, "a process of the run outlived it"
    err = log.read_text()
    found = re.findall(r"interrupted: SIGINT received: saved checkpoint at step (\d+) "
                       r"\(epoch 1, batch (\d+)\)", err)
    assert len(found) == 1, err[-3000:]  # one report, from rank 0 through the launcher
    return run, int(found[0][0]), err


def test_sigint_to_the_launcher_stops_every_process_after_one_step_then_resumes_exactly(
        interrupted, reference, tmp_path):
    saved, step, err = interrupted
    run = copy(saved, tmp_path / "run")
    assert 7 <= step < 56 and "Traceback" not in err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    # the state of both processes was gathered at the save, which only a step both finished allows
    assert state["step"] == step and state["sampler"] == {"epoch": 0, "batch": step}
    assert len(state["rng_ranks"]) == 2
    assert json.loads((run / "training_metrics.json").read_text())["status"] == "interrupted"
    assert not (run / ".lock").exists()
    argv = shlex.split(re.search(r"what to do: resume with: (.+)", err)[1])
    assert argv[:2] == ["tinylm", "train"] and argv[argv.index("--nproc") + 1] == "2"
    assert argv[argv.index("--output-dir") + 1] == str(saved) and argv[-1] == "--resume"
    argv[argv.index("--output-dir") + 1] = str(run)  # this test's copy
    out = tinylm(*argv[1:], "--no-eval", "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "training_metrics.json").read_text())
    assert metrics["resumed"] == [{"at_step": step, "changed": {}}]
    assert_same_training(run, reference)


@pytest.mark.parametrize("victim", [0, 1], ids=["rank 0", "rank 1"])
def test_sigkill_of_one_process_stops_the_others_then_the_run_resumes_exactly(
        prepared, reference, tmp_path, victim):
    run = copy(prepared, tmp_path / "run")
    log = tmp_path / "stderr.txt"
    launcher = start(run, log, *flags(), "--nproc", "2")
    try:
        wait_for(run / "checkpoints" / "last.pt", launcher)
        ranks = ranks_of(launcher)
        ranks[victim].kill()
        code = launcher.wait(timeout=120)  # a hang fails here
    finally:
        launcher.kill()
    gone, alive = psutil.wait_procs(list(ranks.values()), timeout=30)
    assert not alive
    err = log.read_text()
    assert code == 4, err[-3000:]
    assert ("error: lost contact with another training process" if victim == 1 else
            "error: the training processes stopped without a result") in err
    command = re.search(r"what to do: continue from the last checkpoint with: (.+)", err)[1]
    assert not (run / ".lock").exists()  # the launcher held it, and released it
    out = tinylm(*shlex.split(command)[1:], "--no-eval", "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    assert_same_training(run, reference)


def test_a_run_continues_with_another_number_of_processes_from_the_same_global_position(
        interrupted, reference, tmp_path):
    """The sampler's position counts global batches, so one process picks up where two
    stopped: the same remaining batches, the same schedule, the same result up to the order
    of sums."""
    saved, step, _ = interrupted
    run = copy(saved, tmp_path / "run")
    out = tinylm("train", *flags(), "--nproc", "1", "--output-dir", str(run), "--resume",
                 "--no-eval", "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "training_metrics.json").read_text())
    assert metrics["resumed"] == [{"at_step": step, "changed": {"nproc": [2, 1]}}]
    assert metrics["data"]["world_size"] == 1
    first = json.loads((reference / "training_metrics.json").read_text())
    for mine, theirs in zip(metrics["history"], first["history"]):
        assert mine["step"] == theirs["step"]
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)
    assert_close_weights(weights(run), weights(reference))


# ------------------------------------------------------------ the parts
@given(st.integers(1, 80), st.integers(1, 9), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_the_processes_parts_make_up_every_global_batch_with_each_window_weighed_alike(
        n_windows, batch_size, world, seed):
    """Every process draws the same global batches (one sampler, no rank in it) and trains on
    its part: the parts are disjoint and cover the batch, and with the weights the parts come
    with, the processes' averaged gradients give every window of the batch the same weight."""
    teams = [distributed.Team(".") for _ in range(world)]
    for r, team in enumerate(teams):  # outside a process group: who each one would be
        team.rank, team.world_size = r, world
    for whole in EpochSampler(n_windows, batch_size, seed).epoch_batches():
        parts = [team.part(whole) for team in teams]
        trained = [windows for windows, weight in parts if weight]
        assert np.array_equal(np.concatenate(trained), whole)  # disjoint, and all of it
        sizes = [len(distributed.shard(whole, r, world)) for r in range(world)]
        assert max(sizes) - min(sizes) <= 1
        for (windows, weight), size in zip(parts, sizes):
            if size:  # DistributedDataParallel divides by the number of processes
                assert weight / world / len(windows) == pytest.approx(1 / len(whole))
            else:  # no window of its own: one window, weighed 0, to join the all-reduce
                assert weight == 0 and windows.tolist() == whole[:1].tolist()


def test_fewer_windows_per_batch_than_processes_is_refused():
    with pytest.raises(ConfigError, match="batch_size=2 is smaller than nproc=4") as err:
        load_preset("quick", batch_size=2, nproc=4)
    assert "at most 2 processes" in err.value.remedy


def test_help_says_the_batch_is_global(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--nproc V" in out and "the global batch batch_size is split among them" in out
    assert "windows per optimizer step, over all processes" in out


def test_only_train_runs_under_torchrun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    rc = cli.main(["pipeline", "--preset", "quick", "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 1 and "`tinylm pipeline` runs in one process, but torchrun started this one" in err
    assert not (tmp_path / "run").exists()


def test_rank0_reports_how_it_ended_to_the_launcher(tmp_path, monkeypatch):
    from tinylm import distributed
    from tinylm.errors import CorpusError

    outcome = tmp_path / "outcome.json"
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), (distributed.OUTCOME, str(outcome))):
        monkeypatch.setenv(name, value)
    assert distributed.report_to_launcher(2, CorpusError("no corpus", "add one")) == 0
    assert json.loads(outcome.read_text()) == {"exit_code": 2, "error": "CorpusError",
                                               "message": "no corpus", "remedy": "add one"}


LONELY_FAILURE = textwrap.dedent("""
    # Rank 0 fails alone and reports it; rank 1 waits for it forever, as a peer blocked in an
    # nccl collective would, ignoring SIGTERM as the ranks of tinylm's launcher do.
    import signal, time
    from tinylm import distributed
    from tinylm.errors import CheckpointError

    if distributed.launched_rank() == 0:
        distributed.report_to_launcher(4, CheckpointError("rank 0 could not write", "free disk"))
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(300)
""")
LAUNCHER = textwrap.dedent("""
    import sys
    from tinylm import distributed
    from tinylm.errors import TinyLMError

    distributed.GRACE = 1.0
    try:
        distributed.launch([sys.argv[1]], 2)
    except TinyLMError as exc:
        print(f"{type(exc).__name__} {exc.exit_code}: {exc.message}")
""")


def test_a_failure_of_rank_0_alone_ends_every_process_with_its_error(tmp_path):
    """Rank 0 exits 0 after reporting (torchrun would turn its code into 1 and a traceback), so
    torchrun's agent does not stop the others: the launcher must, instead of waiting with them
    for the process group's timeout."""
    rank = tmp_path / "lonely_failure.py"
    rank.write_text(LONELY_FAILURE)
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(rank)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        ranks = ranks_of(launcher)
        out, err = launcher.communicate(timeout=120)
    finally:
        for p in psutil.Process(launcher.pid).children(recursive=True) if launcher.poll() is None else ():
            p.kill()
        launcher.kill()
    assert out.strip() == "CheckpointError 4: rank 0 could not write", err[-3000:]
    gone, alive = psutil.wait_procs(list(ranks.values()), timeout=30)
    assert not alive, "a rank outlived the launch"
