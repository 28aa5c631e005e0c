"""Data parallelism the way PyTorch users know it: torchrun starts N processes, each trains a
copy of the model on its own part of every batch, and ``DistributedDataParallel`` averages
their gradients during the backward pass, so every copy takes the same optimizer step.

torchrun puts RANK, WORLD_SIZE and LOCAL_RANK in each process's environment. The process's
entry point (``tinylm train``) joins the others once (``process_group``: gloo on a CPU, nccl
on CUDA); ``rank()``, ``world_size()`` and ``is_master()`` then say who it is, and 0, 1 and
True in a single process, so the same code runs with or without torchrun. Rank 0 is the
master: it alone writes into the run directory; the others only train.

The training loop (``tinylm.train``) knows none of this: it reaches the other processes and
the run directory through its team, and ``Team`` is that team for a run directory.

``batch_size`` is the global batch: each process takes its part of every batch
(``shard``), so the number of processes changes the speed, not the training
(up to the order of floating-point sums). ``train_in_processes`` is tinylm's own launcher
(``tinylm train --nproc N``): the run folder prepared here, then torchrun in a subprocess,
each rank reading the run folder's ``config.json``.

torch is imported inside the functions, like everywhere the command line reaches before it
has work to do.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

from tinylm import errors
from tinylm.checkpoint import save_checkpoint
from tinylm.errors import ConfigError, TinyLMError, TrainingError
from tinylm.files import write_json
from tinylm.runtime import physical_cores, resolve_device

if TYPE_CHECKING:
    import numpy as np
    import torch

    from tinylm.stages import Run

T = TypeVar("T")

#: The longest one process waits for the others at one collective (a step, a sharded
#: evaluation, rank 0 saving a checkpoint or, under torchrun alone, building the token files).
#: A process that dies is noticed at once (its connections close and torchrun's agent stops
#: the rest); this bounds the wait for one that hangs.
TIMEOUT = timedelta(minutes=10)
#: Set by ``launch`` for the processes it starts: the file where rank 0 reports how it ended.
OUTCOME = "TINYLM_RANK0_OUTCOME"
#: How long the other processes have to stop once rank 0 has reported a failure, before the
#: launcher ends them: a peer blocked in a collective (nccl) would otherwise wait ``TIMEOUT``.
GRACE = 10.0


class Rank0Stopped(TinyLMError):
    """Rank 0 stopped the run and reports why; the other ranks exit with its code, quietly."""


# ------------------------------------------------------------ who am I
def launched() -> bool:
    """True in a process started by torchrun (or anything that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def launched_rank() -> int:
    """This process's rank as its launcher numbered it, before or after ``process_group``."""
    return int(os.environ.get("RANK", 0)) if launched() else 0


def under_launcher() -> bool:
    """True in a process that tinylm's ``launch`` started (through torchrun)."""
    return launched() and OUTCOME in os.environ


def is_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """0 .. world_size - 1; 0 in a single process."""
    import torch.distributed as dist

    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of training processes; 1 without a process group."""
    import torch.distributed as dist

    return dist.get_world_size() if is_initialized() else 1


def is_master() -> bool:
    """Rank 0, or a single process: the one that writes files and prints progress."""
    return rank() == 0


def threads_per_process(threads: int = 0) -> int:
    """``threads`` if set, else this machine's physical cores shared among its processes:
    two processes with two threads each on two cores would only wait for each other."""
    return threads or max(1, physical_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def require_gpus(device: str, nproc: int) -> None:
    """nccl wants one GPU per process: refuse ``nproc`` processes on a machine with fewer GPUs
    before any starts (after, the process without a GPU would fail and the others would wait
    at their first collective). A Mac has one MPS device, and gloo cannot all-reduce its
    tensors, so there several processes are refused too."""
    if nproc > 1 and resolve_device(device).type == "mps":
        raise ConfigError(f"{nproc} processes on MPS: a Mac has one Metal GPU, and PyTorch's "
                          "process groups cannot reduce its tensors",
                          "train in one process (--nproc 1), or on the CPU with --device cpu.")
    if nproc > 1 and resolve_device(device).type == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise ConfigError(f"{nproc} processes on this machine need {nproc} GPUs (one each, "
                              f"for nccl), and torch sees {gpus}",
                              f"start at most {gpus} per machine (--nproc {gpus}), or train on "
                              "the CPU with --device cpu.")


# ------------------------------------------------------------ the process group
@contextmanager
def process_group(device: str = "auto", resume_hint: str = "the same command with --resume"
                  ) -> Iterator[None]:
    """Join the other processes of a torchrun launch for the duration of the block.

    gloo on a CPU, nccl (one GPU per process: LOCAL_RANK) on CUDA. A collective that fails
    because another process is gone becomes a ``TrainingError`` that says so.
    """
    import torch
    import torch.distributed as dist

    if resolve_device(device).type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)
    try:
        yield
    except RuntimeError as exc:
        if not _lost_peer(exc):
            raise
        raise TrainingError(f"lost contact with another training process ({_what(exc)}): it "
                            "stopped (see its message above) or was killed",
                            f"continue from the last checkpoint with: {resume_hint}") from None
    finally:
        dist.destroy_process_group()


def _what(exc: RuntimeError) -> str:
    """gloo's first sentence without its source location:
    "[.../pair.cc:553] Connection closed by peer [127.0.0.1]:32142. This is ..." ->
    "Connection closed by peer [127.0.0.1]:32142"."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[^\]]*\]\s*", "", text).split(". ")[0]


def _lost_peer(exc: RuntimeError) -> bool:
    """gloo reports a closed connection as a plain RuntimeError naming itself; nccl as DistError."""
    import torch.distributed as dist

    return isinstance(exc, getattr(dist, "DistError", ())) or "gloo" in str(exc).lower()


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model wrapped in ``DistributedDataParallel`` when there are several processes
    (it averages the gradients during ``backward``), else the model itself."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    # the only buffer is the constant causal mask: nothing to broadcast before each forward
    # (an attribute in every torch version; the constructor's argument changed its name)
    ddp.broadcast_buffers = False
    return ddp


def shard(batch: Sequence[T], rank: int, world_size: int) -> Sequence[T]:
    """Process ``rank``'s consecutive part of a global batch: the parts of all processes are
    disjoint, cover the batch and differ in size by one window at most (the first ones
    larger), as ``numpy.array_split`` cuts.

    >>> [shard(list(range(5)), r, 2) for r in (0, 1)]
    [[0, 1, 2], [3, 4]]
    """
    size, larger = divmod(len(batch), world_size)
    start = rank * size + min(rank, larger)
    return batch[start:start + size + (rank < larger)]


# ------------------------------------------------------------ collectives
def _tensor(values: list[float]) -> torch.Tensor:
    import torch
    import torch.distributed as dist

    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    return torch.tensor(values, dtype=torch.float64, device=device)


def agree(value: float, signum: int | None) -> tuple[float, int | None]:
    """The sum of ``value`` over the processes, and the stop signal any of them received.

    One all-reduce of three numbers per step: the step's loss (each process sends its share)
    and whether a SIGINT or SIGTERM arrived anywhere, so that every process stops after the
    same step. In a single process: ``(value, signum)``.
    """
    if not is_initialized():
        return value, signum
    import torch.distributed as dist

    t = _tensor([value, signum == signal.SIGINT, signum == signal.SIGTERM])
    dist.all_reduce(t)
    total, sigint, sigterm = t.tolist()
    return total, signal.SIGINT if sigint else (signal.SIGTERM if sigterm else None)


def all_reduce_sum(array: np.ndarray) -> np.ndarray:
    """The element-wise sum of ``array`` over the processes (in float64); itself in one process."""
    if not is_initialized():
        return array
    import torch.distributed as dist

    t = _tensor(array.tolist())
    dist.all_reduce(t)
    return t.cpu().numpy().reshape(array.shape)


def all_gather(obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order; ``[obj]`` in one process."""
    if not is_initialized():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in one process)."""
    if is_initialized():
        import torch.distributed as dist

        dist.barrier()


def decided_by_rank0(decide: Callable[[], T]) -> T:
    """``decide()`` run on rank 0 alone, its result returned on every rank.

    Rank 0 checks and builds what all ranks then rely on (the resume decision, the earlier
    stages) while the others wait. If it fails, they raise ``Rank0Stopped`` with its exit
    code, and only rank 0 reports the error. In a single process: ``decide()``.
    """
    if not is_initialized():
        return decide()
    import torch.distributed as dist

    box: list[Any] = [None]
    if rank() == 0:
        try:
            box[0] = ("ok", decide())
        except BaseException as exc:
            code = exc.exit_code if isinstance(exc, TinyLMError) else (
                130 if isinstance(exc, KeyboardInterrupt) else 1)
            dist.broadcast_object_list([("failed", code, str(exc).splitlines()[0])], src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    if box[0][0] == "failed":
        err = Rank0Stopped(f"rank 0 stopped the run: {box[0][2]}")
        err.exit_code = box[0][1]
        raise err
    return box[0][1]


def stop_together(err: TinyLMError) -> TinyLMError:
    """The error to raise for an outcome every process reached at the same step (an
    interruption, a diverged loss): ``err`` itself on rank 0, which reports it, and a quiet
    ``Rank0Stopped`` with its exit code on the others."""
    if rank() == 0:
        return err
    quiet = Rank0Stopped(f"rank 0 stopped the run: {err.message}")
    quiet.exit_code = err.exit_code
    return quiet


# ------------------------------------------------------------ the training loop's team
class Team:
    """The training loop's seam (``tinylm.train.Solo``) for a run directory: this process among
    the others of a torchrun launch, or alone. Each process trains on its part of every batch
    (``part``), the model is wrapped in DistributedDataParallel, losses, stop signals and sums
    are all-reduced, and rank 0 writes ``checkpoints/`` and ``training_metrics.json`` while
    the others wait until a checkpoint is whole."""

    def __init__(self, run_dir: Path | str) -> None:
        self.dir = Path(run_dir)
        self.rank, self.world_size = rank(), world_size()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return wrap(model)

    def part(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """This process's windows of a global batch, and the weight of their mean loss: its
        share of the batch times the number of processes, since DistributedDataParallel
        averages the gradients and the whole batch's mean weighs each process by its share.
        A process left without a window (an epoch's last batch can be smaller than the number
        of processes) steps on the batch's first window with weight 0: it still joins the
        gradient all-reduce, and adds nothing to it."""
        mine = shard(batch, self.rank, self.world_size)
        if not len(mine):
            return batch[:1], 0.0
        return mine, len(mine) / len(batch) * self.world_size

    def batch_loss_and_stop(self, loss: float, weight: float,
                            signum: int | None) -> tuple[float, int | None]:
        """One all-reduce per step: the whole batch's loss (each process sends its share of
        it), and a stop signal any process got, so that all log the same loss and stop after
        the same step."""
        return agree(loss * weight / self.world_size, signum)

    def stop_signal(self, signum: int | None) -> int | None:
        return agree(0.0, signum)[1]

    def sum(self, array: np.ndarray) -> np.ndarray:
        return all_reduce_sum(array)

    def gather(self, obj: Any) -> list[Any]:
        return all_gather(obj)

    def stopped(self, err: TinyLMError) -> TinyLMError:
        return stop_together(err)

    def save(self, name: str, state: dict[str, Any]) -> str:
        path = self.dir / "checkpoints" / name
        if self.rank == 0:
            save_checkpoint(path, state)
        barrier()
        return str(path)

    def record(self, metrics: dict) -> None:
        if self.rank == 0:
            write_json(self.dir / "training_metrics.json", metrics)


# ------------------------------------------------------------ tinylm's launcher
def train_in_processes(run: Run, quiet: bool = False) -> dict:
    """Train ``run`` in ``run.cfg.nproc`` processes on this machine; its training metrics.

    Everything that could refuse is checked here first, and the earlier stages are built
    here; then this process writes the run folder's ``config.json``, starts ``tinylm train``
    on the folder under torchrun (``launch``), sharing its lock with them, and waits. Each
    rank reads the configuration from that file: no setting travels as a flag.
    """
    require_gpus(run.cfg.device, run.cfg.nproc)
    with run.locked():
        resume = run.prepare_training()
        if resume is None:  # trained already, with these settings
            return json.loads(run.metrics_path.read_text())
        run.cfg.save(run.dir / "config.json")
        launch(["-m", "tinylm.cli", "train", "--output-dir", str(run.dir), "--no-eval",
                "--resume" if resume else "--fresh", *(["--quiet"] if quiet else [])],
               run.cfg.nproc, {"TINYLM_LOCK_PID": run.lock_holder()}, run.resume_command())
        return json.loads(run.metrics_path.read_text())


def launch(argv: list[str], nproc: int, env: dict[str, str] | None = None,
           resume_hint: str = "the same command with --resume") -> None:
    """Run ``python <argv>`` in ``nproc`` processes on this machine, under torchrun, and wait.

    A subprocess of ``python -m torch.distributed.run --standalone --nproc-per-node N argv``,
    in a session of its own so that a Ctrl-C reaches this process only: SIGINT or SIGTERM
    here is passed on as SIGINT to the ranks (not to torchrun's agent, which would report a
    clean stop as a failure), they stop after the same step, and rank 0 saves. The ranks
    ignore SIGTERM, which torchrun's agent sends to the survivors of a failure and which
    would otherwise cut rank 0's report short (the agent kills them later if they hang).
    torchrun turns any failure into exit code 1, so rank 0 reports how it ended in a file
    instead, and its error is raised here as the class it was: the caller sees what one
    process would have raised. If rank 0 could not report (killed), a ``TrainingError`` says so.
    """
    import psutil

    with tempfile.TemporaryDirectory(prefix="tinylm-ranks-") as tmp:
        outcome = Path(tmp) / "outcome.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", *argv]
        child_env = {**os.environ, **(env or {}), OUTCOME: str(outcome)}
        child_env.setdefault("OMP_NUM_THREADS", "1")  # else torchrun warns; threads are set per rank
        proc = subprocess.Popen(cmd, env=child_env, start_new_session=True)
        received: list[int] = []

        def forward(signum: int, frame: Any) -> None:
            received.append(signum)
            try:
                ranks = psutil.Process(proc.pid).children() or [psutil.Process(proc.pid)]
                for p in ranks:
                    p.send_signal(signal.SIGINT)
            except psutil.NoSuchProcess:
                pass

        previous = {}
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                previous[s] = signal.signal(s, forward)
        except ValueError:  # not the main thread: no signals to pass on
            pass
        try:
            code = _wait(proc, outcome)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        report = _read_outcome(outcome)
    if report is None:
        if received:
            raise errors.Interrupted(
                f"{signal.Signals(received[0]).name} received before the training processes "
                "started: nothing was trained", "run the same command again.")
        raise TrainingError(f"the training processes stopped without a result (torchrun exited "
                            f"with {code}): rank 0 was killed or crashed; see the messages above",
                            f"continue from the last checkpoint with: {resume_hint}")
    if report["exit_code"]:
        cls = getattr(errors, report["error"], None)
        if not (isinstance(cls, type) and issubclass(cls, TinyLMError)):
            cls = TinyLMError
        err = cls(report["message"], report["remedy"])
        err.exit_code = report["exit_code"]
        raise err


def _wait(proc: subprocess.Popen, outcome: Path) -> int:
    """torchrun's exit code. Rank 0 reports a failure and exits 0, so torchrun's agent does
    not stop the others: a peer that needs rank 0 at its next collective notices at once
    under gloo, but under nccl it may block until ``TIMEOUT``. So once rank 0 has reported a
    failure, the others get ``GRACE`` seconds to stop, then they and torchrun are killed."""
    import psutil

    failed_at = None
    while True:
        try:
            return proc.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            pass
        if failed_at is None and (_read_outcome(outcome) or {}).get("exit_code"):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > GRACE:
            try:  # the ranks too: torchrun starts each in a session of its own
                doomed = [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]
            except psutil.NoSuchProcess:
                doomed = []
            for p in doomed:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            return proc.wait()


def _read_outcome(path: Path) -> dict | None:
    """Rank 0's report (written whole or not at all), or None before it exists."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def report_to_launcher(code: int, failure: TinyLMError | None) -> int:
    """The exit code of a process that tinylm's ``launch`` started through torchrun: rank 0
    writes how it ended (``launch`` raises it again, and ends the others if it failed), and
    every rank exits 0 after an error it handled, which torchrun would only turn into 1 and a
    traceback of its own. Elsewhere: ``code``."""
    if not under_launcher():
        return code
    if launched_rank() == 0:
        write_json(Path(os.environ[OUTCOME]), {
            "exit_code": code, "error": type(failure).__name__ if failure else None,
            "message": failure.message if failure else "", "remedy": failure.remedy if failure else ""})
    return 0
