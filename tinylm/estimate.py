"""How long will this take? A few seconds of measurement before a long wait.

The expected time of a run is work divided by speed. The work is known from the settings:
``epochs`` passes over the training windows, an evaluation of the validation split after
each, and a fixed cost for the stages around training. The speed is not: it depends on this
machine's cores, its bf16 support and what else runs on it. So ``estimate`` measures it,
running a few optimizer steps of the configured model on random tokens, and multiplies.

>>> from tinylm.config import load_preset
>>> round(run_seconds(load_preset("quick", epochs=2), 50_000.0, 100_000, 10_000), 1)
19.1
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tinylm.config import Config
from tinylm.runtime import cpu_supports_bf16, synchronize

#: The wait worth warning about: a longer estimate comes with settings that fit.
TARGET_SECONDS = 600.0
#: Seconds around training, allowances rather than measurements of this machine: building
#: the corpus, tokenizer and token files, then samples and budgets; the pipeline's chapters
#: add their own cells (plots, demonstrations, sweeps, kernel starts) on top, set from the
#: reference run's pipeline.json less training, evaluation and these stages. Training
#: dominates any run worth estimating, and it is measured.
STAGES_SECONDS = 15.0
CHAPTERS_SECONDS = 55.0
#: An evaluation step per token: the forward pass, one of the three matmul passes of training.
EVAL_COST = 1 / 3
#: Training expected to be shorter than this is not worth a longer measurement.
SHORT_SECONDS = 60.0


@dataclass
class Estimate:
    tokens_per_second: float
    train_tokens: int
    val_tokens: int
    exact: bool  # token counts from the run's token files, not from the corpus size
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def tokens_per_byte(vocab_size: int) -> float:
    """A rough tokens-per-byte of the embedded corpus for a vocabulary size, before any
    tokenizer is trained: a straight line in log2 of the vocabulary size, fitted to what
    tokenizers of two sizes produced on it, since each doubling of the vocabulary saves about
    the same. Never above one token per byte (the 256 byte tokens), nor below a floor.

    >>> round(tokens_per_byte(1024), 3), round(tokens_per_byte(4096), 3)
    (0.378, 0.27)
    """
    return min(1.0, max(0.2, 0.378 - 0.054 * math.log2(vocab_size / 1024)))


def count_tokens(cfg: Config, tokens_dir: Path | None = None) -> tuple[int, int, bool]:
    """Training and validation tokens of the run: exact from ``tokens/meta.json`` when the
    run has token files, else estimated from the corpus size and ``tokens_per_byte``."""
    meta = Path(tokens_dir) / "meta.json" if tokens_dir else None
    if meta is not None and meta.is_file():
        counts = json.loads(meta.read_text())["tokens"]
        return int(counts["train"]), int(counts["val"]), True
    total = cfg.bytes_per_language * len(cfg.languages) * tokens_per_byte(cfg.vocab_size)
    return int(total * (1 - cfg.val_fraction)), int(total * cfg.val_fraction), False


def run_seconds(cfg: Config, tokens_per_second: float, train_tokens: int, val_tokens: int,
                pipeline: bool = False) -> float:
    """Expected wall seconds of a run: training, an evaluation per epoch, the stages around.

    Training processes whole batches of windows (the last batch of an epoch may be smaller),
    ``epochs`` times; each epoch, and a last partial one, ends with a forward pass over the
    validation windows.
    """
    windows = max(1, (train_tokens - 1) // cfg.block_size)
    train = cfg.epochs * windows * cfg.block_size / tokens_per_second
    evaluation = math.ceil(cfg.epochs) * val_tokens * EVAL_COST / tokens_per_second
    return train + evaluation + STAGES_SECONDS + (CHAPTERS_SECONDS if pipeline else 0.0)


def measure_tokens_per_second(cfg: Config, seconds: float = 3.0, warmup: int = 2) -> float:
    """Training tokens per second of ``cfg``'s model on this machine, as it is right now.

    The trainer's own optimizer steps (``Trainer.train_step``: autocast, clipping, the optimizer) on
    random tokens, under the precision and threads the run would use, for about ``seconds``
    after ``warmup`` steps; the model is thrown away.
    """
    import numpy as np  # numpy: the command line checks its input without it

    from tinylm.train import Trainer  # torch: only once the measurement runs

    with tempfile.TemporaryDirectory(prefix="tinylm-estimate-") as tmp:
        trainer = Trainer(cfg.replace(compile=False), _random_tokens(cfg, Path(tmp)), progress=False)
        x, y = trainer.train_data.batch(np.arange(cfg.batch_size))
        steps, started = 0, None
        while started is None or time.perf_counter() - started < seconds:
            if steps == warmup:
                started = time.perf_counter()
            trainer.train_step(x, y, cfg.learning_rate)
            steps += 1
        synchronize(trainer.device)
        return (steps - warmup) * x.numel() / (time.perf_counter() - started)


def _random_tokens(cfg: Config, folder: Path) -> Path:
    """Token files of random ids, one batch of windows and a meta.json: enough for a trainer
    to step on (its speed does not depend on the text)."""
    import numpy as np  # numpy: the command line checks its input without it

    n = cfg.batch_size * cfg.block_size + 1
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, n).astype(np.uint16)
    for split in ("train", "val"):
        tokens.tofile(folder / f"{split}.bin")
    lang = cfg.languages[0]
    (folder / "meta.json").write_text(json.dumps({
        "vocab_size": cfg.vocab_size, "special_ids": {f"<|{lang}|>": 0},
        "spans": {"train": [[0, n, lang]], "val": [[0, n, lang]]},
        "splits": {"val": {lang: {"tokens_per_byte": 1.0}}}}))
    return folder


def estimate(cfg: Config, tokens_dir: Path | None = None, pipeline: bool = False,
             seconds: float = 3.0) -> Estimate:
    """Measure this machine and estimate the run's wall time.

    Half a second of measurement first; a run whose training looks longer than a minute is
    measured again for ``seconds``, so a small run does not wait for its own estimate (the
    measured speed only scales the training: the chapters' allowance of a short pipeline
    would not be estimated any better).
    """
    train_tokens, val_tokens, exact = count_tokens(cfg, tokens_dir)
    tps = measure_tokens_per_second(cfg, 0.5)
    if run_seconds(cfg, tps, train_tokens, val_tokens) - STAGES_SECONDS > SHORT_SECONDS:
        tps = measure_tokens_per_second(cfg, seconds)
    return Estimate(tps, train_tokens, val_tokens, exact,
                    run_seconds(cfg, tps, train_tokens, val_tokens, pipeline))


def fitting_epochs(cfg: Config, est: Estimate, pipeline: bool = False,
                   target: float = TARGET_SECONDS) -> int:
    """The most epochs that fit in ``target`` seconds at the measured speed (0 if none)."""
    one = run_seconds(cfg.replace(epochs=1), est.tokens_per_second, est.train_tokens,
                      est.val_tokens, pipeline)
    fixed = STAGES_SECONDS + (CHAPTERS_SECONDS if pipeline else 0.0)
    return max(0, int((target - fixed) // (one - fixed)))


def explain(cfg: Config, est: Estimate, pipeline: bool = False,
            target: float = TARGET_SECONDS) -> list[str]:
    """What to print before the wait: the estimate and, when it is long, settings that fit."""
    minutes = est.seconds / 60
    what = "the pipeline" if pipeline else "training"
    lines = [f"estimate: {what} of preset {cfg.name!r} takes about {minutes:.1f} minutes here "
             f"({est.tokens_per_second:,.0f} tokens/s measured, {cfg.epochs:g} epochs of "
             f"{'' if est.exact else '~'}{est.train_tokens:,} tokens)"]
    if est.seconds > target:
        epochs = fitting_epochs(cfg, est, pipeline, target)
        fits = [f"--epochs {epochs}"] if epochs >= 1 else []
        if cfg.dtype == "fp32":
            if cpu_supports_bf16():
                fits.append("--dtype auto (this CPU has native bf16)")
        fits.append("--preset quick (about a minute)")
        lines.append(f"  that is more than {target / 60:.0f} minutes; to fit: " + ", or ".join(fits))
    return lines
