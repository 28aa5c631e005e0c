"""The training loop: Muon or AdamW, warmup and decay, clipping, bf16 autocast, evaluation
every epoch, checkpoints, a progress bar, and exact resume.

``Trainer.fit`` is the loop, on one screen: take a batch, set the learning rate, one
step, log, checkpoint every N steps; evaluate and save at the end of each epoch (and where a
run of a fractional number of epochs ends inside its last one). What keeps a
run safe is layered around it as small named parts: ``StopSignals`` turns Ctrl-C into a flag
that the loop checks between steps, ``state_dict`` holds everything the loop depends on
(model, optimizer, step, schedule, sampler position, running epoch loss, RNG), and the
learning rate is a pure function of the step (``Schedule``). That is why a run stopped
mid-epoch and resumed ends with the same weights as one that never stopped.

Everything outside one process's memory reaches the loop through one seam, its ``team``:
the other training processes and where checkpoints and metrics go. The default, ``Solo``, is
one process that keeps nothing, so this module trains on its own (the book's short
experiments); a run directory passes ``tinylm.distributed.Team``, with which the same loop
trains in several processes started by torchrun (chapter 11) and rank 0 writes the files.

The trainer makes no process-wide settings (threads, allocator, subnormals): the entry
point does, once (``tinylm.runtime.setup_process``).
"""
from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from tinylm import progress
from tinylm.config import Config, check_resume
from tinylm.data import EpochSampler, load_splits, total_steps
from tinylm.errors import ConfigError, Interrupted, TrainingError
from tinylm.evaluate import evaluate
from tinylm.model import GPT, GPTConfig
from tinylm.runtime import autocast, environment, resolve_device, resolve_dtype, to_device


def lr_at(step: int, total_steps: int, peak: float, warmup: int, min_ratio: float,
          decay: str = "cosine") -> float:
    """Learning rate at ``step``: linear warmup to ``peak``, then down to ``peak * min_ratio``
    at ``total_steps``, along a half cosine or a straight line (``decay``).

    >>> lr_at(0, 100, 1.0, 10, 0.1), lr_at(10, 100, 1.0, 10, 0.1), lr_at(100, 100, 1.0, 10, 0.1)
    (0.1, 1.0, 0.1)
    >>> lr_at(55, 100, 1.0, 10, 0.0, "linear")
    0.5
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    if step >= total_steps:
        return peak * min_ratio
    progress = (step - warmup) / max(1, total_steps - warmup)
    return peak * (min_ratio + (1 - min_ratio) * falling(progress, decay))


def falling(progress: float, decay: str) -> float:
    """From 1 at ``progress`` 0 to 0 at 1: a half cosine, or a straight line."""
    if decay == "linear":
        return 1 - progress
    return 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Schedule:
    """The learning rate of every step of a run: ``lr_at`` over its ``total_steps``.

    A resume may change the number of steps (more epochs). During the warmup that only
    stretches the decay. After it, the rate continues from the one reached at ``start``
    (``start_rate``) and decays along a new cosine or line to the same floor over the steps
    that remain: the rate never jumps, and stays a pure function of the step, so an
    interrupted resumed run still resumes exactly. The checkpoint keeps it.
    """

    total_steps: int
    peak: float
    warmup: int
    min_ratio: float
    start: int = 0
    start_rate: float | None = None  # None: the plain warmup + decay of ``lr_at``
    decay: str = "cosine"  # checkpoints from before the setting existed decayed along a cosine

    @classmethod
    def of(cls, cfg: Config, total_steps: int) -> "Schedule":
        return cls(total_steps, cfg.learning_rate, cfg.warmup_steps, cfg.min_lr_ratio,
                   decay=cfg.lr_decay)

    def __call__(self, step: int) -> float:
        if self.start_rate is None:
            return lr_at(step, self.total_steps, self.peak, self.warmup, self.min_ratio,
                         self.decay)
        floor = self.peak * self.min_ratio
        if step >= self.total_steps:
            return floor
        progress = (step - self.start) / max(1, self.total_steps - self.start)
        return floor + (self.start_rate - floor) * falling(progress, self.decay)

    def resumed(self, step: int, total_steps: int) -> "Schedule":
        """This schedule continued at ``step`` by a run of ``total_steps`` steps in all."""
        if total_steps == self.total_steps:
            return self
        if self.start_rate is None and step < self.warmup:
            return replace(self, total_steps=total_steps)
        return replace(self, total_steps=total_steps, start=step, start_rate=self(step))


class Step(NamedTuple):
    """What one optimizer step reports: the batch's loss and the gradient norm before clipping."""

    loss: float
    grad_norm: float


class StopNow(Exception):
    """A second signal during work that may be cut short (``StopSignals.second_stops_now``)."""


class Solo:
    """The loop's one seam to what lies outside this process's memory, as one process that
    keeps nothing: it trains on every window of every batch, its sums are its own values, and
    saving does nothing.

    ``tinylm.distributed.Team`` answers the same questions for a run directory, in one process
    or several (chapter 11): each process trains on its part of every batch, with a weight
    that makes the processes' averaged gradients the whole batch's; the model is wrapped in
    ``DistributedDataParallel``; losses, stop signals and sums are all-reduced; and rank 0
    writes ``checkpoints/`` and ``training_metrics.json``.
    """

    rank, world_size = 0, 1

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def part(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """The windows of ``batch`` this process trains on, and the weight of their loss."""
        return batch, 1.0

    def batch_loss_and_stop(self, loss: float, weight: float,
                            signum: int | None) -> tuple[float, int | None]:
        """The whole batch's loss from this process's (trained at ``weight``), and a stop
        signal any process got."""
        return loss, signum

    def stop_signal(self, signum: int | None) -> int | None:
        """A stop signal any process got (after an evaluation, where no step was taken)."""
        return signum

    def sum(self, array: np.ndarray) -> np.ndarray:
        """An evaluation's sums over the processes."""
        return array

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every process, in rank order."""
        return [obj]

    def stopped(self, err: TrainingError | Interrupted) -> Exception:
        """The error this process raises for an outcome every process reached at one step."""
        return err

    def save(self, name: str, state: dict[str, Any]) -> str | None:
        """Keep checkpoint ``name`` (``last.pt``, ``best.pt``, ``final.pt``); say where."""
        return None

    def record(self, metrics: dict) -> None:
        """Keep the metrics report (``training_metrics.json``)."""


class StopSignals:
    """``with StopSignals() as stop:`` turns SIGINT/SIGTERM into ``stop.signum``.

    The loop checks the flag between steps, saves, and stops cleanly; a signal never lands
    in the middle of an optimizer step or a checkpoint write. Signals our parent chose to
    ignore stay ignored (a shell's background job ignores SIGINT, so that Ctrl-C stops only
    the foreground), and outside the main thread nothing is installed. During work that
    changes nothing (an evaluation, ``second_stops_now``) a second signal raises ``StopNow``
    at once: a repeated Ctrl-C is not left waiting for the end of a long evaluation.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._cut_short = False

    @contextmanager
    def second_stops_now(self) -> Iterator[None]:
        self._cut_short = True
        try:
            yield
        finally:
            self._cut_short = False

    def __enter__(self) -> "StopSignals":
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                if signal.getsignal(s) is not signal.SIG_IGN:
                    self._previous[s] = signal.signal(s, self._on_signal)
            except ValueError:  # not the main thread
                break
        return self

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._cut_short and self.signum is not None:
            raise StopNow(signum)
        if self._cut_short:
            print(f"\n{signal.Signals(signum).name} received: stopping once this evaluation "
                  "ends; press Ctrl-C again to stop now", file=sys.stderr, flush=True)
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


class Trainer:
    """Trains one model on one run directory's token files (``tokens_dir``: train.bin,
    val.bin, meta.json).

    ``team`` is everything outside this process's memory (``Solo``: one process that keeps
    nothing; ``tinylm.distributed.Team``: a run directory, in one process or several; every
    process makes its own ``Trainer``). ``resume_from`` is a checkpoint's state to continue
    from, refused if its model or data settings differ from ``cfg``.
    """

    def __init__(self, cfg: Config, tokens_dir: Path, *, team: Solo | None = None,
                 resume_from: dict[str, Any] | None = None, progress: bool = True,
                 tokenizer_sha256: str = "", resume_hint: str = "tinylm train --resume") -> None:
        self.cfg = cfg
        self.team = team or Solo()
        self.progress = progress and self.team.rank == 0  # rank 0 speaks for every process
        self.tokenizer_sha256 = tokenizer_sha256
        self.resume_hint = resume_hint
        self.train_data, self.val_data, self.meta = load_splits(tokens_dir, cfg.block_size)
        if self.meta["vocab_size"] > cfg.vocab_size:
            raise ConfigError(f"the tokenizer has {self.meta['vocab_size']} tokens but "
                              f"vocab_size={cfg.vocab_size}", "retrain the tokenizer stage.")
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        torch.manual_seed(cfg.seed)
        self.model_config = GPTConfig.from_config(cfg)
        self.model = GPT(self.model_config).to(self.device)
        self.optimizer = self.model.configure_optimizer(cfg.learning_rate, cfg.weight_decay,
                                                        (cfg.beta1, cfg.beta2), cfg.optimizer,
                                                        cfg.muon_momentum)
        self.sampler = EpochSampler(len(self.train_data), cfg.batch_size, cfg.seed)
        if self.team.world_size > 1:  # each process draws its own dropout masks
            torch.manual_seed(cfg.seed + self.team.rank)
        self.schedule = Schedule.of(cfg, self.total_steps)
        self.step = 0
        self.epoch_loss_sum = 0.0  # running sums of the epoch in progress (saved on interrupt)
        self.epoch_steps = 0
        self.history: list[dict] = []
        self.best_val = math.inf
        self.elapsed = 0.0  # training seconds over all sessions of this run
        self.resumed: list[dict] = []
        if resume_from is not None:
            self.resume(resume_from)
        self.eager = self.team.wrap(self.model)  # DistributedDataParallel in a process group
        # torch.compile fuses the many small ops of a tiny model; it needs a C++ compiler
        # and compiling before the first step, so it is optional and falls back to eager.
        self.forward = torch.compile(self.eager, dynamic=False) if cfg.compile else self.eager

    @property
    def total_steps(self) -> int:
        return total_steps(self.cfg.epochs, self.sampler.batches_per_epoch)

    @property
    def done(self) -> bool:
        """All steps taken and the last of them evaluated (an interrupted evaluation is not)."""
        return (self.step >= self.total_steps
                and bool(self.history) and self.history[-1]["step"] == self.step)

    def epoch_end(self) -> int:
        """The batch of the current epoch after which the run evaluates: its last, or where
        the run's steps run out inside it."""
        return min(self.sampler.batches_per_epoch,
                   self.total_steps - self.sampler.epoch * self.sampler.batches_per_epoch)

    # ------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """Train until ``cfg.epochs`` epochs are done; return the final metrics."""
        cfg, team = self.cfg, self.team
        with StopSignals() as stop:
            while not self.done:
                self.model.train()
                bar = self._progress_bar()
                tick, tokens, seconds = time.perf_counter(), 0, 0.0
                for batch in self.sampler.epoch_batches(until=self.epoch_end()):
                    lr = self.schedule(self.step)
                    windows, weight = team.part(batch)  # one process: all of it, weight 1
                    step = self.train_step(*self.train_data.batch(windows), lr, weight)
                    loss, signum = team.batch_loss_and_stop(step.loss, weight, stop.signum)
                    if not (math.isfinite(loss) and math.isfinite(step.grad_norm)):
                        raise team.stopped(self._diverged(loss, step.grad_norm))
                    self.step += 1
                    self.epoch_loss_sum += loss
                    self.epoch_steps += 1
                    tokens += len(batch) * cfg.block_size
                    now = time.perf_counter()
                    self.elapsed, seconds, tick = self.elapsed + now - tick, seconds + now - tick, now
                    bar.update()
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}", refresh=False)
                    if signum is not None:
                        bar.close()
                        self._interrupt(signum)
                    if self.step % cfg.checkpoint_every == 0:
                        self.save("last.pt")
                bar.close()
                self._end_epoch(tokens / max(seconds, 1e-9), stop)
                signum = team.stop_signal(stop.signum)  # a signal during evaluation
                if signum is not None:
                    self._interrupt(signum)
            self.save("final.pt")
            return self.write_metrics("complete")

    def train_step(self, x: torch.Tensor, y: torch.Tensor, lr: float, weight: float = 1.0) -> Step:
        """One optimizer step on a batch at learning rate ``lr``: forward under autocast,
        backward, clip, the optimizer (Muon and AdamW, or AdamW). The primitive that ``fit``,
        ``run_steps``, the time estimate and the book share.

        ``weight`` scales the loss before ``backward``: in data-parallel training, this
        process's share of the global batch times the number of processes, because
        DistributedDataParallel averages the processes' gradients, and the mean over the
        whole batch weighs each process by its share. The loss returned is not scaled.
        A gradient whose norm is not finite is not applied: it would make every weight NaN.
        """
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = to_device(x, self.device), to_device(y, self.device)
        with autocast(self.device, self.dtype):
            try:
                _, loss = self.forward(x, y, return_logits=False)
            except Exception as exc:  # compile errors surface at the first call
                if self.forward is self.eager:
                    raise
                print(f"warning: torch.compile failed ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:200]}); training without it", file=sys.stderr)
                self.forward = self.eager
                _, loss = self.forward(x, y, return_logits=False)
        (loss if weight == 1.0 else loss * weight).backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.cfg.grad_clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        else:
            norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
        if math.isfinite(norm):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return Step(loss.item(), norm)

    def run_steps(self, steps: int, after_step: Callable[["Trainer"], None] | None = None) -> dict:
        """Train ``steps`` steps with a whole schedule (warmup, cosine) squeezed into them: for
        short experiments (the book's comparisons, sweeps), without evaluation, checkpoints
        or metrics files. Each call is its own schedule, wherever the trainer stands.

        Returns ``{"loss": [...], "seconds": [...]}``, one entry per step.
        """
        schedule, out = Schedule.of(self.cfg, steps), {"loss": [], "seconds": []}
        self.model.train()
        while True:
            for batch in self.sampler.epoch_batches():
                t0 = time.perf_counter()
                out["loss"].append(self.train_step(*self.train_data.batch(batch),
                                                   schedule(len(out["loss"]))).loss)
                out["seconds"].append(time.perf_counter() - t0)
                self.step += 1
                if after_step is not None:
                    after_step(self)
                if len(out["loss"]) == steps:
                    return out
            self.sampler.next_epoch()

    def evaluate(self) -> dict:
        """Validation loss, perplexity and bits per byte, overall and per language (each
        process evaluates its share of the batches; every one gets the whole figures)."""
        return evaluate(self.model, self.val_data, self.meta["spans"]["val"], self.cfg.languages,
                        {lang: v["tokens_per_byte"] for lang, v in self.meta["splits"]["val"].items()},
                        batch_size=self.cfg.batch_size, device=self.device, dtype=self.dtype,
                        rank=self.team.rank, world_size=self.team.world_size, total=self.team.sum)

    # ------------------------------------------------------------ around the loop
    def _progress_bar(self) -> tqdm:
        return progress.bar(total=max(self.epoch_end(), self.sampler.batch),
                            initial=self.sampler.batch,
                            desc=f"epoch {self.sampler.epoch + 1}/{math.ceil(self.cfg.epochs)}", unit="step",
                            disable=not self.progress)

    def _end_epoch(self, tokens_per_second: float, stop: StopSignals) -> None:
        """Evaluate, record the epoch, keep the best model, save, report.

        A second signal during the evaluation of one process stops it at once: the epoch's
        training is saved as it is, and a resumed run evaluates it (processes of a
        data-parallel run finish theirs together, as they agree on every stop).
        """
        t0 = time.perf_counter()
        try:
            with stop.second_stops_now() if self.team.world_size == 1 else nullcontext():
                val = self.evaluate()
        except StopNow:
            self._interrupt(stop.signum)
        record = {
            "epoch": self.sampler.epoch + 1, "step": self.step,
            "train_loss": self.epoch_loss_sum / max(self.epoch_steps, 1),
            "val_loss": val["loss"], "val_perplexity": val["perplexity"], "val_bpb": val["bpb"],
            "val_by_lang": val["by_lang"],
            # the rate of the epoch's last step, also when a resumed epoch had no step left
            "lr": self.schedule(max(self.step - 1, 0)),
            "tokens_per_second": round(tokens_per_second, 1),
        }
        self.elapsed += time.perf_counter() - t0
        self.history.append(record)
        if self.sampler.batch == self.sampler.batches_per_epoch:  # else the run ended inside it
            self.sampler.next_epoch()
        self.epoch_loss_sum, self.epoch_steps = 0.0, 0
        if record["val_loss"] < self.best_val:
            self.best_val = record["val_loss"]
            self.save("best.pt")
        self.save("last.pt")
        self.write_metrics("running")
        if self.progress:
            langs = " ".join(f"{l} {v['loss']:.3f}" for l, v in val["by_lang"].items())
            print(f"epoch {record['epoch']}/{math.ceil(self.cfg.epochs)}: train {record['train_loss']:.3f}  "
                  f"val {val['loss']:.3f} ({langs})  bpb {val['bpb']:.3f}", file=sys.stderr)

    def _diverged(self, loss: float, grad_norm: float) -> TrainingError:
        what = (f"the training loss became {loss}" if not math.isfinite(loss) else
                f"the gradient norm became {grad_norm} (loss {loss:.3f}; the step was not applied)")
        return TrainingError(f"{what} at step {self.step} (epoch {self.sampler.epoch + 1})",
                             "lower --learning-rate (halve it), keep grad_clip at 1.0, "
                             "or train with --dtype fp32; then start fresh.")

    def _interrupt(self, signum: int) -> None:
        where = self.save("last.pt")
        self.write_metrics("interrupted")
        at = f"at step {self.step} (epoch {self.sampler.epoch + 1}, batch {self.sampler.batch})"
        raise self.team.stopped(Interrupted(
            f"{signal.Signals(signum).name} received: " +
            (f"saved checkpoint {at} to {where}" if where else f"stopped {at}"),
            f"resume with: {self.resume_hint}"))

    # ------------------------------------------------------------ state
    def save(self, name: str) -> str | None:
        """Checkpoint ``name`` through the team; where it went, if anywhere. Every process
        calls it: each draws its own dropout masks, so all their random generators are
        gathered into it first."""
        return self.team.save(name, self.state_dict(self.team.gather(self._rng_state())))

    def _rng_state(self) -> dict[str, Any]:
        """The CPU's random generator, and the GPU's that draws dropout masks there."""
        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
                "mps": torch.mps.get_rng_state() if self.device.type == "mps" else None}

    def state_dict(self, rng_ranks: list[dict] | None = None) -> dict[str, Any]:
        """Everything the loop depends on. ``rng_ranks``: every process's random generators,
        as ``save`` gathers them; this process's alone without."""
        rng = rng_ranks or [self._rng_state()]
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "model_config": self.model_config.to_dict(), "config": json.dumps(self.cfg.to_dict()),
            "step": self.step, "schedule": asdict(self.schedule), "sampler": self.sampler.state_dict(),
            "epoch_loss_sum": self.epoch_loss_sum, "epoch_steps": self.epoch_steps,
            "history": json.dumps(self.history), "best_val": self.best_val,
            "elapsed": self.elapsed, "resumed": json.dumps(self.resumed),
            "rng_torch": rng[0]["torch"], "tokenizer_sha256": self.tokenizer_sha256,
            "world_size": self.team.world_size,
        }
        if len(rng) > 1:
            state["rng_ranks"] = rng
        if self.device.type in ("cuda", "mps"):
            state[f"rng_{self.device.type}"] = rng[0][self.device.type]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.sampler.load_state_dict(state["sampler"])
        self.epoch_loss_sum = float(state["epoch_loss_sum"])
        self.epoch_steps = int(state["epoch_steps"])
        self.history = json.loads(state["history"])
        self.best_val = float(state["best_val"])
        self.elapsed = float(state["elapsed"])
        self.resumed = json.loads(state["resumed"])
        # the schedule it trained with (older checkpoints: the plain one of its own epochs),
        # continued over this run's number of steps
        saved = state.get("schedule") or asdict(Schedule.of(self.cfg, total_steps(
            Config.from_dict(json.loads(state["config"])).epochs, self.sampler.batches_per_epoch)))
        self.schedule = Schedule(**saved).resumed(self.step, self.total_steps)
        saved = state.get("rng_ranks") or [{"torch": state["rng_torch"], "cuda": state.get("rng_cuda"),
                                            "mps": state.get("rng_mps")}]
        rank = self.team.rank
        if rank < len(saved):
            torch.set_rng_state(saved[rank]["torch"])
            gpu = {"cuda": torch.cuda, "mps": torch.mps}.get(self.device.type)
            if gpu is not None and saved[rank].get(self.device.type) is not None:
                gpu.set_rng_state(saved[rank][self.device.type])
        else:  # more processes than the saving run had: this one starts its own stream
            torch.manual_seed(self.cfg.seed + rank)

    def resume(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's state, refusing changed model or data settings."""
        changed = check_resume(Config.from_dict(json.loads(state["config"])), self.cfg)
        if self.tokenizer_sha256 and state.get("tokenizer_sha256") not in ("", self.tokenizer_sha256):
            raise TrainingError("cannot resume: the tokenizer changed since the checkpoint was saved",
                                "restore the original tokenizer or start fresh.")
        self.load_state_dict(state)
        self.resumed.append({"at_step": self.step, "changed": changed})

    # ------------------------------------------------------------ the report
    def metrics(self, status: str) -> dict:
        """The content of ``training_metrics.json``: settings, model, data, history, timing."""
        best = min(self.history, key=lambda h: h["val_loss"]) if self.history else None
        return {
            "status": status,
            "hyperparameters": self.cfg.to_dict(),
            "model": {**self.model_config.to_dict(), "parameters": self.model.num_params(),
                      "non_embedding_parameters": self.model.num_params(non_embedding=True),
                      "flops_per_token": self.model.flops_per_token()},
            "data": {"train_tokens": len(self.train_data.tokens), "val_tokens": len(self.val_data.tokens),
                     "train_windows": len(self.train_data), "val_windows": len(self.val_data),
                     "steps_per_epoch": self.sampler.batches_per_epoch,
                     # batch_size is the global batch; each process steps on its share of it
                     "global_batch_size": self.cfg.batch_size, "world_size": self.team.world_size},
            "environment": environment(self.device, self.dtype),
            "schedule": asdict(self.schedule),
            "history": self.history,
            "best_epoch": best["epoch"] if best else None,
            "best_val_loss": best["val_loss"] if best else None,
            "final_val_loss": self.history[-1]["val_loss"] if self.history else None,
            "resumed": self.resumed,
            "timing": {"train_seconds": round(self.elapsed, 3),
                       "tokens_per_second": round(self.step * self.cfg.batch_size * self.cfg.block_size
                                                  / max(self.elapsed, 1e-9), 1)},
        }

    def write_metrics(self, status: str) -> dict:
        metrics = self.metrics(status)
        self.team.record(metrics)
        return metrics
