"""The training loop: AdamW, warmup + cosine schedule, clipping, bf16 autocast, evaluation
every epoch, checkpoints, a progress bar, and exact resume.

Everything the loop depends on lives in explicit state (model, optimizer, step, sampler
position, running epoch loss, RNG) that ``Trainer.state_dict()`` saves into ``last.pt``;
the learning rate is a pure function of the step. That is why a run stopped mid-epoch and
resumed ends with the same weights as one that never stopped.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from tinylm import __version__
from tinylm.checkpoint import RunLock, load_checkpoint, load_resume_state, save_checkpoint, write_json
from tinylm.config import Config, check_resume
from tinylm.data import EpochSampler, TokenDataset, load_meta
from tinylm.errors import ConfigError, CorpusError, Interrupted, TrainingError
from tinylm.evaluate import autocast, evaluate
from tinylm.model import GPT, GPTConfig


def lr_at(step: int, total_steps: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Learning rate at ``step``: linear warmup to ``peak``, then cosine down to
    ``peak * min_ratio`` at ``total_steps``.

    >>> lr_at(0, 100, 1.0, 10, 0.1), lr_at(10, 100, 1.0, 10, 0.1), lr_at(100, 100, 1.0, 10, 0.1)
    (0.1, 1.0, 0.1)
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    if step >= total_steps:
        return peak * min_ratio
    progress = (step - warmup) / max(1, total_steps - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ------------------------------------------------------------------ the machine
def resolve_device(name: str = "auto") -> torch.device:
    """CUDA when asked for or present (for "auto"), otherwise the CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible", "use --device cpu or auto.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmuls (AVX512-BF16 or AMX), where autocast pays."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """bf16 autocast where the hardware does it natively ("auto"), else fp32."""
    if name == "fp32":
        return torch.float32
    native = (torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_supports_bf16())
    if name == "bf16" or native:
        return torch.bfloat16 if (native or name == "bf16") else torch.float32
    return torch.float32


def set_threads(n: int = 0) -> int:
    """Use ``n`` torch threads (0 = one per physical core, hyperthreads only add contention)."""
    if n <= 0:
        import psutil

        n = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def keep_freed_memory() -> bool:
    """Ask glibc malloc to keep freed blocks instead of returning them to the OS each step.

    Large activations freed and re-allocated every step otherwise go through mmap/munmap
    and page-fault back in; keeping them measured 1.3-1.5x faster training here
    (benchmarks/train_throughput.py). Costs resident memory; a no-op off glibc.
    """
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**30))


def environment(device: torch.device, dtype: torch.dtype, threads: int) -> dict[str, Any]:
    import tokenizers

    return {
        "tinylm": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "tokenizers": tokenizers.__version__, "numpy": np.__version__,
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "device": str(device), "dtype": str(dtype).replace("torch.", ""), "threads": threads,
        "cuda_device": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
    }


# ------------------------------------------------------------------ the trainer
class Trainer:
    """Trains one model on one run directory's token files.

    ``tokens_dir`` holds train.bin/val.bin/meta.json; ``out_dir`` receives
    ``checkpoints/`` and ``training_metrics.json``. With ``resume=True`` the trainer
    continues from ``checkpoints/last.pt`` (or ``best.pt`` if last is damaged).
    """

    def __init__(self, cfg: Config, tokens_dir: Path, out_dir: Path, *, resume: bool = False,
                 progress: bool = True, tokenizer_sha256: str = "",
                 resume_hint: str = "tinylm train --resume") -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.metrics_path = self.out_dir / "training_metrics.json"
        self.progress = progress
        self.tokenizer_sha256 = tokenizer_sha256
        self.resume_hint = resume_hint
        self.meta = load_meta(tokens_dir)
        if self.meta["vocab_size"] > cfg.vocab_size:
            raise ConfigError(f"the tokenizer has {self.meta['vocab_size']} tokens but "
                              f"vocab_size={cfg.vocab_size}", "retrain the tokenizer stage.")
        self.train_data = TokenDataset.from_file(Path(tokens_dir) / "train.bin", cfg.block_size)
        self.val_data = TokenDataset.from_file(Path(tokens_dir) / "val.bin", cfg.block_size)
        for split, ds in (("training", self.train_data), ("validation", self.val_data)):
            if len(ds) < 1:
                raise CorpusError(f"the {split} split has {len(ds.tokens)} tokens, fewer than one "
                                  f"window of block_size+1={cfg.block_size + 1}",
                                  "give a larger corpus or a smaller --block-size.")
        keep_freed_memory()
        # Adam's second moments drift into subnormal floats, which x86 handles many times
        # slower; flushing them to zero cut a fused AdamW step from 0.75 to 0.57 ms here
        # (benchmarks/README.md). A process-wide setting, like the thread count above.
        torch.set_flush_denormal(True)
        self.threads = set_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        torch.manual_seed(cfg.seed)
        self.model_config = GPTConfig.from_config(cfg)
        self.model = GPT(self.model_config).to(self.device)
        self.optimizer = self.model.configure_optimizer(cfg.learning_rate, cfg.weight_decay,
                                                        (cfg.beta1, cfg.beta2))
        self.sampler = EpochSampler(len(self.train_data), cfg.batch_size, cfg.seed)
        self.step = 0
        self.epoch_loss_sum = 0.0  # running sums of the epoch in progress (saved on interrupt)
        self.epoch_steps = 0
        self.history: list[dict] = []
        self.best_val = math.inf
        self.elapsed = 0.0  # training seconds over all sessions of this run
        self.resumed: list[dict] = []
        if resume:
            self._resume()
        # torch.compile fuses the many small CPU ops of a tiny model; it needs a C++ compiler
        # and 20-60 s of compiling, so it is optional and falls back to eager if it fails.
        self.forward = torch.compile(self.model, dynamic=False) if cfg.compile else self.model
        self._stop_signal: int | None = None

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.sampler.batches_per_epoch

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "model_config": self.model_config.to_dict(), "config": json.dumps(self.cfg.to_dict()),
            "step": self.step, "sampler": self.sampler.state_dict(),
            "epoch_loss_sum": self.epoch_loss_sum, "epoch_steps": self.epoch_steps,
            "history": json.dumps(self.history), "best_val": self.best_val,
            "elapsed": self.elapsed, "resumed": json.dumps(self.resumed),
            "rng_torch": torch.get_rng_state(), "tokenizer_sha256": self.tokenizer_sha256,
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state()
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
        torch.set_rng_state(state["rng_torch"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"])

    def _resume(self) -> None:
        state, _ = load_resume_state(self.ckpt_dir, self.device)  # last.pt, else best.pt
        changed = check_resume(Config.from_dict(json.loads(state["config"])), self.cfg)
        if self.tokenizer_sha256 and state.get("tokenizer_sha256") not in ("", self.tokenizer_sha256):
            raise TrainingError("cannot resume: the tokenizer changed since the checkpoint was saved",
                                "restore the original tokenizer or start fresh.")
        self.load_state_dict(state)
        self.resumed.append({"at_step": self.step, "changed": changed})

    def _save(self, name: str) -> None:
        save_checkpoint(self.ckpt_dir / name, self.state_dict())

    def write_metrics(self, status: str) -> dict:
        best = min(self.history, key=lambda h: h["val_loss"]) if self.history else None
        metrics = {
            "status": status,
            "hyperparameters": self.cfg.to_dict(),
            "model": {**self.model_config.to_dict(), "parameters": self.model.num_params(),
                      "non_embedding_parameters": self.model.num_params(non_embedding=True),
                      "flops_per_token": self.model.flops_per_token()},
            "data": {"train_tokens": len(self.train_data.tokens), "val_tokens": len(self.val_data.tokens),
                     "train_windows": len(self.train_data), "val_windows": len(self.val_data),
                     "steps_per_epoch": self.sampler.batches_per_epoch},
            "environment": environment(self.device, self.dtype, self.threads),
            "history": self.history,
            "best_epoch": best["epoch"] if best else None,
            "best_val_loss": best["val_loss"] if best else None,
            "final_val_loss": self.history[-1]["val_loss"] if self.history else None,
            "resumed": self.resumed,
            "timing": {"train_seconds": round(self.elapsed, 3),
                       "tokens_per_second": round(self.step * self.cfg.batch_size * self.cfg.block_size
                                                  / max(self.elapsed, 1e-9), 1)},
        }
        write_json(self.metrics_path, metrics)
        return metrics

    # ------------------------------------------------------------ the loop
    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum

    def fit(self) -> dict:
        """Train until ``cfg.epochs`` epochs are done; return the final metrics."""
        # save and stop on SIGINT/SIGTERM, unless our parent chose to ignore them (a
        # shell's background job ignores SIGINT, so that Ctrl-C stops only the foreground)
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)
                    if signal.getsignal(s) is not signal.SIG_IGN}
        try:
            with RunLock(self.out_dir):  # shared with a Run that holds it already
                while self.sampler.epoch < self.cfg.epochs:
                    self._train_epoch()
                self._save("final.pt")
                return self.write_metrics("complete")
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimizer step on a batch; returns its loss. The learning rate is set by the caller."""
        x, y = x.to(self.device), y.to(self.device)
        with autocast(self.device, self.dtype):
            try:
                _, loss = self.forward(x, y)
            except Exception as exc:  # compile errors surface at the first call
                if self.forward is self.model:
                    raise
                print(f"warning: torch.compile failed ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:200]}); training without it", file=sys.stderr)
                self.forward = self.model
                _, loss = self.forward(x, y)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def evaluate(self) -> dict:
        """Validation loss, perplexity and bits per byte, overall and per language."""
        return evaluate(self.model, self.val_data, self.meta["spans"]["val"], self.cfg.languages,
                        {lang: v["tokens_per_byte"] for lang, v in self.meta["splits"]["val"].items()},
                        batch_size=self.cfg.batch_size, device=self.device, dtype=self.dtype)

    def run_steps(self, steps: int, after_step: Callable[["Trainer"], None] | None = None) -> dict:
        """Train ``steps`` steps with the schedule squeezed into them: for short experiments
        (the book's comparisons, sweeps), without evaluation, checkpoints or metrics files.

        Returns ``{"loss": [...], "seconds": [...]}``, one entry per step.
        """
        cfg, out = self.cfg, {"loss": [], "seconds": []}
        while len(out["loss"]) < steps:
            for batch in self.sampler.epoch_batches():
                lr = lr_at(self.step, steps, cfg.learning_rate, cfg.warmup_steps, cfg.min_lr_ratio)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                t0 = time.perf_counter()
                out["loss"].append(self.train_step(*self.train_data.batch(batch)))
                out["seconds"].append(time.perf_counter() - t0)
                self.step += 1
                if after_step is not None:
                    after_step(self)
                if len(out["loss"]) == steps:
                    return out
            self.sampler.next_epoch()
        return out

    def _train_epoch(self) -> None:
        cfg, model = self.cfg, self.model
        epoch = self.sampler.epoch
        model.train()
        bar = tqdm(total=self.sampler.batches_per_epoch, initial=self.sampler.batch,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", disable=not self.progress,
                   file=sys.stderr, dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 15.0)  # a log or notebook: fewer lines
        tick, tokens, seconds = time.perf_counter(), 0, 0.0
        # the rate of the epoch's last step, also when a resumed epoch has no step left
        lr = lr_at(max(self.step - 1, 0), self.total_steps, cfg.learning_rate, cfg.warmup_steps,
                   cfg.min_lr_ratio)
        for batch in self.sampler.epoch_batches():
            lr = lr_at(self.step, self.total_steps, cfg.learning_rate, cfg.warmup_steps, cfg.min_lr_ratio)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            x, y = self.train_data.batch(batch)
            value = self.train_step(x, y)
            if not math.isfinite(value):
                raise TrainingError(f"the training loss became {value} at step {self.step} "
                                    f"(epoch {epoch + 1})",
                                    "lower --learning-rate (halve it), keep grad_clip at 1.0, "
                                    "or train with --dtype fp32; then start fresh.")
            self.step += 1
            self.epoch_loss_sum += value
            self.epoch_steps += 1
            tokens += x.numel()
            now = time.perf_counter()
            self.elapsed += now - tick
            seconds += now - tick
            tick = now
            bar.update()
            bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.1e}", refresh=False)
            if self._stop_signal is not None:
                bar.close()
                self._interrupt()
            if self.step % cfg.checkpoint_every == 0:
                self._save("last.pt")
        bar.close()
        t0 = time.perf_counter()
        val = self.evaluate()
        record = {
            "epoch": epoch + 1, "step": self.step,
            "train_loss": self.epoch_loss_sum / max(self.epoch_steps, 1),
            "val_loss": val["loss"], "val_perplexity": val["perplexity"], "val_bpb": val["bpb"],
            "val_by_lang": val["by_lang"], "lr": lr,
            "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
        }
        self.elapsed += time.perf_counter() - t0
        self.history.append(record)
        self.sampler.next_epoch()
        self.epoch_loss_sum, self.epoch_steps = 0.0, 0
        if record["val_loss"] < self.best_val:
            self.best_val = record["val_loss"]
            self._save("best.pt")
        self._save("last.pt")
        self.write_metrics("running")
        if self.progress:
            langs = " ".join(f"{l} {v['loss']:.3f}" for l, v in val["by_lang"].items())
            print(f"epoch {epoch + 1}/{cfg.epochs}: train {record['train_loss']:.3f}  "
                  f"val {val['loss']:.3f} ({langs})  bpb {val['bpb']:.3f}", file=sys.stderr)
        if self._stop_signal is not None:
            self._interrupt()

    def _interrupt(self) -> None:
        self._save("last.pt")
        self.write_metrics("interrupted")
        name = signal.Signals(self._stop_signal).name
        raise Interrupted(f"{name} received: saved checkpoint at step {self.step} "
                          f"(epoch {self.sampler.epoch + 1}, batch {self.sampler.batch}) "
                          f"to {self.ckpt_dir / 'last.pt'}",
                          f"resume with: {self.resume_hint}")


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[GPT, dict]:
    """A trained model from a checkpoint, in eval mode, with the checkpoint's other state."""
    state = load_checkpoint(Path(path), device)
    model = GPT(GPTConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state
