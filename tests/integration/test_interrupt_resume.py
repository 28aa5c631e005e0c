"""Interruption and resume: nothing lost, and a resumed run ends exactly where an
uninterrupted one does.

The real-signal tests run ``tinylm train`` in a subprocess and send SIGINT, SIGTERM or
SIGKILL once the run has written a mid-epoch checkpoint; the in-process tests send SIGINT
to themselves at chosen steps (first, middle, last of an epoch, during evaluation) to hit
every boundary. All runs use one thread, so "the same machine" also means the same
reduction order.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tinylm import cli, pipeline
from tinylm import train as train_module
from tinylm.checkpoint import load_checkpoint, load_resume_state
from tinylm.config import RANGES, Config, command_flags, load_preset
from tinylm.data import EpochSampler, total_steps
from tinylm.errors import ConfigError, Interrupted, TrainingError
from tinylm.stages import Run

from run_helpers import assert_same_checkpoint, comparable, copy, prepare, wait_for

CLI = [sys.executable, "-m", "tinylm.cli"]
TINY = dict(bytes_per_language=30_000, vocab_size=512, n_layer=1, n_embd=32, n_head=2,
            block_size=32, batch_size=4, epochs=2, warmup_steps=20, threads=1, checkpoint_every=7)
FLAGS = ["--preset", "quick"] + [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]
CFG = load_preset("quick", **TINY)


def flags(**changes) -> list[str]:
    """FLAGS with some values changed."""
    values = {**TINY, **changes}
    return ["--preset", "quick"] + [x for k, v in values.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def tinylm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=timeout)


def start(run_dir: Path, log: Path, *args: str) -> subprocess.Popen:
    """``tinylm train`` in the background; stderr (progress bars) goes to ``log``."""
    return subprocess.Popen([*CLI, "train", *args, "--output-dir", str(run_dir), "--no-eval"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"))


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_training(run: Path, reference: Path) -> None:
    """Final weights, optimizer state and every figure of training_metrics.json are equal."""
    assert_same_checkpoint(*(load_checkpoint(d / "checkpoints" / "final.pt") for d in (run, reference)))
    ma, mb = (json.loads((d / "training_metrics.json").read_text()) for d in (run, reference))
    assert ma["status"] == "complete"
    assert comparable(ma) == comparable(mb)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Corpus, tokenizer and token files of the tiny configuration, built once."""
    return prepare(tmp_path_factory, CFG)


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory) -> Path:
    """An uninterrupted run of the CLI."""
    run_dir = copy(prepared, tmp_path_factory.mktemp("reference") / "run")
    out = tinylm("train", *FLAGS, "--output-dir", str(run_dir), "--no-eval", "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def steps_per_epoch(reference) -> int:
    steps = json.loads((reference / "training_metrics.json").read_text())["data"]["steps_per_epoch"]
    assert steps > 100  # room for an interruption in the middle of an epoch
    return steps


# --------------------------------------------------------------- real signals
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_epoch_saves_and_prints_the_exact_resume_command(prepared, reference,
                                                                    steps_per_epoch, tmp_path, sig):
    run = copy(prepared, tmp_path / "run")
    proc = start(run, tmp_path / "stderr.txt", *FLAGS)
    wait_for(run / "checkpoints" / "last.pt", proc)  # the step-7 checkpoint: mid-epoch
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 130
    err = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in err
    found = re.search(rf"interrupted: {sig.name} received: saved checkpoint at step (\d+) "
                      rf"\(epoch 1, batch (\d+)\) to (\S+)", err)
    assert found, err[-2000:]
    step = int(found[1])
    assert 0 < step == int(found[2]) < steps_per_epoch  # stopped in the middle of epoch 1
    assert Path(found[3]) == run / "checkpoints" / "last.pt"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == step
    assert json.loads((run / "training_metrics.json").read_text())["status"] == "interrupted"
    assert not (run / ".lock").exists()  # released on the way out
    command = re.search(r"what to do: resume with: (.+)", err)[1]
    argv = shlex.split(command)
    assert argv[:2] == ["tinylm", "train"] and "--resume" in argv
    if sig == signal.SIGTERM:
        return  # SIGINT below carries on with the printed command
    out = tinylm(*argv[1:], "--no-eval")  # the printed command, samples and budgets aside
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "training_metrics.json").read_text())
    assert metrics["resumed"] == [{"at_step": step, "changed": {}}]  # the very same settings
    assert_same_training(run, reference)


def test_sigkill_at_any_moment_resumes_from_the_last_checkpoint_exactly(prepared, reference,
                                                                        steps_per_epoch, tmp_path):
    run = copy(prepared, tmp_path / "run")
    proc = start(run, tmp_path / "stderr.txt", *FLAGS)
    wait_for(run / "checkpoints" / "last.pt", proc)
    time.sleep(0.1)  # somewhere later: maybe in a step, maybe in the middle of a save
    proc.kill()
    proc.wait()
    lock = run / ".lock"
    assert lock.read_text().split()[0] == str(proc.pid)  # a stale lock, left by the dead run
    state, used = load_resume_state(run / "checkpoints", quiet=True)
    assert used.name == "last.pt" and state["step"] > 0
    assert state["step"] % 7 == 0 or state["sampler"]["batch"] == 0  # a checkpoint_every save
    out = tinylm("train", *FLAGS, "--output-dir", str(run), "--resume", "--no-eval", "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert not lock.exists() and not list(run.rglob(".*.tmp"))  # stale lock and leftovers gone
    metrics = json.loads((run / "training_metrics.json").read_text())
    assert metrics["resumed"] == [{"at_step": state["step"], "changed": {}}]
    assert_same_training(run, reference)


def test_a_second_trainer_on_a_run_in_use_is_refused(prepared, tmp_path):
    run = copy(prepared, tmp_path / "run")
    long = flags(epochs=40)
    first = start(run, tmp_path / "first.txt", *long)
    try:
        wait_for(run / "checkpoints" / "last.pt", first)
        before = (run / "config.json").read_bytes()
        second = tinylm("train", *long, "--output-dir", str(run), "--resume", "--no-eval")
        assert second.returncode == 1
        assert f"error: run directory {run} is in use by process {first.pid}" in second.stderr
        assert "kill -INT" in second.stderr and "Traceback" not in second.stderr
        assert (run / "config.json").read_bytes() == before
        assert first.poll() is None  # the first run was not disturbed
    finally:
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=120) == 130


def test_a_second_pipeline_on_a_run_in_use_is_refused(tmp_path, monkeypatch, capsys):
    book = tmp_path / "book"
    book.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('run_dir = "runs/book"\nconfig = {}\nresume = True')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("1 + 1")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, book / "01_overview.ipynb")
    monkeypatch.setattr(pipeline, "BOOK_DIR", book)
    run = tmp_path / "run"
    run.mkdir()
    hold = f"import sys\nfrom tinylm.files import RunLock\nwith RunLock({str(run)!r}):\n" \
           "    print('locked', flush=True)\n    sys.stdin.read()"
    owner = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert owner.stdout.readline().strip() == "locked"
        rc = cli.main(["pipeline", "--preset", "quick", "--output-dir", str(run), "--chapters", "1",
                       "--quiet"])
    finally:
        owner.kill()
        owner.wait()
    err = capsys.readouterr().err
    assert rc == 1 and f"is in use by process {owner.pid}" in err and "Traceback" not in err
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # no chapter ran, nothing written


def _signal_once_the_tokenizer_trains(sig: int, seen: list, done, timeout: float = 60) -> None:
    """Send ``sig`` to this process once a child process is training the tokenizer: it has
    spent a second of CPU, far more than starting Python and reading the corpus take, so it
    is inside the Rust training. Without such a child, send it at ``timeout`` to end the
    command, unless it is ``done`` already."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not seen and not done.is_set():
        for child in psutil.Process().children():
            try:
                if "tinylm.tokenizer" in child.cmdline() and sum(child.cpu_times()[:2]) >= 1.0:
                    seen.append(child)
            except psutil.Error:
                continue
        time.sleep(0.02)
    if not done.is_set():
        os.kill(os.getpid(), sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_the_tokenizer_training_stops_it_at_once(prepared, tmp_path, capsys, sig):
    """Outside the training loop a signal stops the command at once, with exit code 130:
    also while the tokenizer trains in Rust, where Python sees no signal until it returns."""
    import random
    import threading

    run = copy(prepared, tmp_path / "run")
    shutil.rmtree(run / "tokenizer")  # so that the tokenizer stage runs again
    # 6 MB of random words, most of them distinct: a BPE training of several CPU seconds, far
    # longer than the one CPU second the watcher waits for, on any machine
    rng = random.Random(0)
    letters_and_spaces = bytes(97 + b % 32 if b % 32 < 26 else 32 for b in range(256))
    words = rng.randbytes(6_000_000).translate(letters_and_spaces).decode()
    (run / "corpus" / "train.txt").write_text("".join(
        f"<|en|>{words[i:i + 6000]}<|endoftext|>\n" for i in range(0, len(words), 6000)),
        encoding="utf-8")
    before = snapshot(run)
    seen: list = []
    done = threading.Event()
    watcher = threading.Thread(target=_signal_once_the_tokenizer_trains, args=(sig, seen, done))
    watcher.start()
    try:
        rc = cli.main(["train", *FLAGS, "--output-dir", str(run), "--no-eval", "--quiet"])
    finally:
        done.set()
        watcher.join(timeout=180)
    err = capsys.readouterr().err
    assert seen, "the tokenizer did not train in a child process that could be stopped"
    assert not seen[0].is_running()  # killed, not left to finish
    assert rc == 130 and "Traceback" not in err, err
    assert "interrupted: stopped before training started" in err
    assert "what to do: run the same command again" in err
    assert snapshot(run) == before  # no tokenizer, no lock, no temporary file
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # cli.main put it back


# --------------------------------------------------- changed settings on resume
@pytest.mark.parametrize("changes, named", [
    ({"vocab_size": 1024}, ["vocab_size: 512 in the checkpoint, 1024 now"]),
    ({"block_size": 64, "n_layer": 2}, ["block_size: 32 in the checkpoint, 64 now",
                                       "n_layer: 1 in the checkpoint, 2 now"]),
    ({"bytes_per_language": 40_000}, ["bytes_per_language: 30000 in the checkpoint, 40000 now"]),
])
def test_resume_with_other_model_or_data_settings_is_refused_before_anything_changes(
        reference, tmp_path, changes, named):
    run = copy(reference, tmp_path / "run")
    before = snapshot(run)
    out = tinylm("train", *flags(**changes), "--output-dir", str(run), "--resume", "--no-eval")
    assert out.returncode == 4, out.stderr[-2000:]
    assert "error: cannot resume: settings that change the model or the data differ" in out.stderr
    assert all(n in out.stderr for n in named) and "Traceback" not in out.stderr
    # the remedy gives the command with the original settings
    original = re.search(r"resume with the original settings \((.+?)\)", out.stderr)[1]
    assert "--vocab-size 512" in original and "--block-size 32" in original
    assert "--fresh" in out.stderr
    assert snapshot(run) == before  # no corpus, tokenizer, token file or checkpoint rewritten


def test_resume_after_the_corpus_files_changed_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for lang, word in (("en", "hello"), ("es", "hola")):
        (src / f"book.{lang}.txt").write_text(
            "\n\n".join(f"{word} {i} " + "lorem ipsum dolor " * 30 for i in range(40)))
    cfg = load_preset("quick", **{**TINY, "epochs": 1, "corpus_path": str(src)})
    run = tmp_path / "run"
    Run(run, cfg, progress=False).train()
    before = snapshot(run)
    (src / "book.en.txt").write_text((src / "book.en.txt").read_text() + "\n\nnew words")
    with pytest.raises(TrainingError) as err:
        Run(run, cfg.replace(epochs=2), progress=False, resume=True).train()
    assert f"the files under corpus_path={src} changed" in err.value.message
    assert "--fresh" in err.value.remedy and err.value.exit_code == 4
    assert snapshot(run) == before


def test_more_epochs_on_resume_is_allowed_and_recorded(reference, steps_per_epoch, tmp_path):
    run = copy(reference, tmp_path / "run")
    out = tinylm("train", *flags(epochs=3), "--output-dir", str(run), "--resume", "--no-eval", "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads((run / "training_metrics.json").read_text())
    first = json.loads((reference / "training_metrics.json").read_text())
    assert metrics["resumed"] == [{"at_step": 2 * steps_per_epoch, "changed": {"epochs": [2, 3]}}]
    assert metrics["hyperparameters"]["epochs"] == 3 and len(metrics["history"]) == 3
    assert comparable(metrics)["history"][:2] == comparable(first)["history"]


def test_resume_with_a_corrupt_last_checkpoint_falls_back_to_best(prepared, reference,
                                                                  steps_per_epoch, tmp_path,
                                                                  monkeypatch):
    run = copy(prepared, tmp_path / "run")
    _interrupt_at(monkeypatch, steps_per_epoch + 30)
    with pytest.raises(Interrupted):
        Run(run, CFG, progress=False).train()
    monkeypatch.undo()
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:-1000])  # truncated
    out = tinylm("train", *FLAGS, "--output-dir", str(run), "--resume", "--no-eval", "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"warning: checkpoint {last} is corrupt or truncated" in out.stderr
    assert f"resuming from {run / 'checkpoints' / 'best.pt'} instead (step {steps_per_epoch})" in out.stderr
    assert_same_training(run, reference)  # replaying from the end of epoch 1 changes nothing


def test_resume_with_every_checkpoint_damaged_is_refused(reference, tmp_path):
    run = copy(reference, tmp_path / "run")
    for name in ("last.pt", "best.pt", "final.pt"):
        path = run / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:-10])
    out = tinylm("train", *flags(epochs=3), "--output-dir", str(run), "--resume", "--no-eval")
    assert out.returncode == 4 and "Traceback" not in out.stderr
    assert "last.pt is corrupt or truncated" in out.stderr and "best.pt is corrupt" in out.stderr
    assert "what to do: start fresh with --fresh" in out.stderr


# ------------------------------------------------ in-process, at chosen steps
def _interrupt_at(monkeypatch, step: int | None = None, during_eval: bool = False) -> None:
    """Send ourselves SIGINT while step ``step`` runs (so training stops right after it),
    or during the first evaluation."""
    fired = []

    def lr_at(s, *args):
        if step is not None and s == step - 1 and not fired:
            fired.append(s)
            os.kill(os.getpid(), signal.SIGINT)
        return real_lr_at(s, *args)

    def evaluate(*args, **kwargs):
        if not fired:
            fired.append("eval")
            os.kill(os.getpid(), signal.SIGINT)
        return real_evaluate(*args, **kwargs)

    real_lr_at, real_evaluate = train_module.lr_at, train_module.evaluate
    if during_eval:
        monkeypatch.setattr(train_module, "evaluate", evaluate)
    else:
        monkeypatch.setattr(train_module, "lr_at", lr_at)


@pytest.fixture(scope="module")
def library_reference(prepared, tmp_path_factory) -> Path:
    run_dir = copy(prepared, tmp_path_factory.mktemp("library") / "run")
    Run(run_dir, CFG, progress=False).train()
    return run_dir


@pytest.mark.parametrize("where", ["first step", "mid epoch", "last step of epoch 1",
                                   "first step of epoch 2", "last step", "evaluation"])
def test_interrupt_at_any_step_then_resume_is_exact(prepared, library_reference, steps_per_epoch,
                                                    tmp_path, monkeypatch, where):
    spe = steps_per_epoch
    step = {"first step": 1, "mid epoch": spe // 2 + 3, "last step of epoch 1": spe,
            "first step of epoch 2": spe + 1, "last step": 2 * spe, "evaluation": spe}[where]
    run = copy(prepared, tmp_path / "run")
    _interrupt_at(monkeypatch, step, during_eval=where == "evaluation")
    with pytest.raises(Interrupted) as err:
        Run(run, CFG, progress=False).train()
    monkeypatch.undo()
    assert err.value.exit_code == 130
    assert f"SIGINT received: saved checkpoint at step {step} " in err.value.message
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == step
    Run(run, CFG, progress=False, resume=True).train()
    assert_same_training(run, library_reference)


def test_a_fractional_number_of_epochs_ends_inside_the_last_one_and_resumes_exactly(
        prepared, steps_per_epoch, tmp_path, monkeypatch):
    """epochs=1.5: one epoch and the first half of the second's order, evaluated where it
    ends. Stopped inside that half, it resumes exactly; resumed with epochs=2, it takes the
    rest of the same order, so every window is trained on twice."""
    spe, cfg = steps_per_epoch, CFG.replace(epochs=1.5)
    end = total_steps(1.5, spe)
    seen: list[int] = []
    real_batches = EpochSampler.epoch_batches

    def recorded(self, until=None):
        for batch in real_batches(self, until):
            seen.extend(batch.tolist())
            yield batch

    whole = copy(prepared, tmp_path / "whole")
    with monkeypatch.context() as m:
        m.setattr(EpochSampler, "epoch_batches", recorded)
        Run(whole, cfg, progress=False).train()
    metrics = json.loads((whole / "training_metrics.json").read_text())
    assert [(h["epoch"], h["step"]) for h in metrics["history"]] == [(1, spe), (2, end)]
    assert load_checkpoint(whole / "checkpoints" / "final.pt")["sampler"] == {"epoch": 1, "batch": end - spe}
    assert Run(whole, cfg, progress=False, resume=True).train()["history"] == metrics["history"]

    stopped = copy(prepared, tmp_path / "stopped")
    _interrupt_at(monkeypatch, spe + 5)
    with pytest.raises(Interrupted):
        Run(stopped, cfg, progress=False).train()
    monkeypatch.undo()
    Run(stopped, cfg, progress=False, resume=True).train()
    assert_same_training(stopped, whole)

    with monkeypatch.context() as m:
        m.setattr(EpochSampler, "epoch_batches", recorded)
        longer = Run(whole, cfg.replace(epochs=2), progress=False, resume=True).train()
    assert [h["step"] for h in longer["history"]] == [spe, end, 2 * spe]
    n_windows = len(set(seen))
    assert len(seen) == 2 * n_windows and sorted(seen) == sorted(list(range(n_windows)) * 2)


class _SignalledDuring:
    """A validation set whose ``at``-th batch sends this process SIGINT: a Ctrl-C in the
    middle of an evaluation."""

    def __init__(self, dataset, at: int) -> None:
        self.dataset, self.at, self.batches = dataset, at, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        return getattr(self.dataset, name)

    def batch(self, idx):
        self.batches += 1
        if self.batches == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return self.dataset.batch(idx)


def test_a_second_ctrl_c_during_an_evaluation_stops_it_at_once(prepared, library_reference,
                                                               steps_per_epoch, tmp_path,
                                                               monkeypatch, capsys):
    run = copy(prepared, tmp_path / "run")
    seen = []
    real_evaluate = train_module.evaluate

    def evaluate(model, dataset, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: stop once the evaluation ends
        seen.append(_SignalledDuring(dataset, at=3))  # the second, in its third batch
        return real_evaluate(model, seen[-1], *args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", evaluate)
    with pytest.raises(Interrupted) as err:
        Run(run, CFG, progress=False).train()
    monkeypatch.undo()
    assert seen[0].batches == 3 < len(seen[0]) // CFG.batch_size  # not one batch more
    assert "press Ctrl-C again to stop now" in capsys.readouterr().err
    assert f"saved checkpoint at step {steps_per_epoch} " in err.value.message
    metrics = json.loads((run / "training_metrics.json").read_text())
    assert (metrics["status"], metrics["history"]) == ("interrupted", [])  # not evaluated
    Run(run, CFG, progress=False, resume=True).train()  # evaluates the epoch, then goes on
    assert_same_training(run, library_reference)


def test_the_reports_of_a_run_stopped_in_its_first_epoch_say_what_is_missing(
        prepared, tmp_path, monkeypatch, capsys):
    from tinylm.evaluate import training_checks

    run = copy(prepared, tmp_path / "run")
    _interrupt_at(monkeypatch, 3)
    with pytest.raises(Interrupted):
        Run(run, CFG, progress=False).train()
    monkeypatch.undo()
    metrics = json.loads((run / "training_metrics.json").read_text())
    assert (metrics["status"], metrics["history"]) == ("interrupted", [])
    capsys.readouterr()
    assert cli.main(["info", "--output-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "interrupted, 0 epochs" in out and "no epoch finished yet, so no validation loss" in out
    cli._summary(Run(run, CFG, progress=False), training_checks(metrics))  # as pipeline prints it
    out = capsys.readouterr().out
    assert "[--] final validation loss: not measured: no epoch has finished yet" in out
    assert "checkpoints/last.pt" in out  # what is there


def test_two_runs_with_the_same_seed_are_identical(reference, library_reference):
    """The CLI run and the library run: two processes, the same seed, the same numbers."""
    assert_same_training(library_reference, reference)


# ------------------------------------------------------------------ properties
_FIELDS = {k: v for k, v in RANGES.items() if k not in ("vocab_size", "n_embd", "n_head")}


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["quick", "default", "low_memory"]), st.dictionaries(
    st.sampled_from(sorted(_FIELDS)), st.integers(0, 1000).map(lambda i: i / 1000), max_size=4),
    st.booleans())  # (not st.floats: training sets flush-to-zero, which hypothesis refuses)
def test_the_printed_command_rebuilds_the_configuration(preset, shares, compile_):
    """``command_flags`` (the resume hint) gives back exactly the configuration it was made of."""
    values = {"compile": compile_, "languages": ["es", "en"]}
    for key, share in shares.items():
        lo, hi, _ = RANGES[key]
        value = lo + share * (min(hi, lo + 10_000) - lo)
        values[key] = int(value) if isinstance(getattr(Config(), key), int) else value
    try:
        cfg = load_preset(preset, **values)
    except ConfigError:  # values in range that refuse each other (nproc above batch_size)
        assume(False)
    args = cli._parser().parse_args(["train", *command_flags(cfg)])
    assert cli.config_from_args(args) == cfg


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 60), st.integers(1, 9), st.integers(0, 2**31 - 1), st.data())
def test_sampler_resumes_anywhere_with_the_same_batches(n_windows, batch_size, seed, data):
    full = EpochSampler(n_windows, batch_size, seed)
    batches = []
    for _ in range(2):
        batches += [b.tolist() for b in full.epoch_batches()]
        full.next_epoch()
    stop = data.draw(st.integers(0, len(batches)), label="stop after")
    first = EpochSampler(n_windows, batch_size, seed)
    taken = []
    while len(taken) < stop:
        gen = first.epoch_batches()
        for b in gen:
            taken.append(b.tolist())
            if len(taken) == stop:
                break
        else:
            first.next_epoch()
    second = EpochSampler(n_windows, batch_size, seed)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    while second.epoch < 2:
        taken += [b.tolist() for b in second.epoch_batches()]
        second.next_epoch()
    assert taken == batches
