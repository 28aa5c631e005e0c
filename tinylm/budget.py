"""Resource budgets: what does it cost to serve the model, and is that within bounds?

Inference is measured in a *fresh* Python process that loads the final checkpoint, so the
peak resident memory is what a deployment would see (the training process has long since
grown its heap). A request is ``prompt_tokens`` random prompt tokens followed by
``new_tokens`` sampled tokens at batch 1, with the KV cache, in fp32 (autocast only slows
batch-1 decoding on a CPU), on the device the model is served from: the CPU by default, or
a GPU, where the clock is read only once its queued kernels have finished and the peak GPU
memory is reported beside the peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from tinylm.checkpoint import load_model
from tinylm.config import default
from tinylm.errors import ValidationError
from tinylm.runtime import autocast, resolve_device, set_threads, synchronize

#: Requests timed per measurement, after the warm-up.
REQUESTS = 30


def measure_inference(checkpoint: Path, prompt_tokens: int = default("budget_prompt_tokens"),
                      new_tokens: int = default("budget_new_tokens"), requests: int = REQUESTS,
                      warmup: int = 3, threads: int = 1, device: str = "cpu") -> dict:
    """Run the measurement in a fresh process; return latency percentiles (ms), peak RSS (MB)
    and, on CUDA, peak GPU memory (``peak_gpu_mb``, MB; None on the CPU, and on MPS, which
    counts no peak).

    One thread by default: decoding one token at batch 1 is many tiny operations, and
    handing each to a second thread costs more in synchronisation than it saves
    (``benchmarks/serving/inference.py --threads 2`` measures it). 0 = one per core.
    ``device`` is "cpu", "cuda", "mps" or "auto"; a missing GPU is refused here, before the
    child.
    """
    cmd = [sys.executable, "-m", "tinylm.budget", str(checkpoint), "--prompt-tokens", str(prompt_tokens),
           "--new-tokens", str(new_tokens), "--requests", str(requests), "--warmup", str(warmup),
           "--threads", str(threads), "--device", resolve_device(device).type]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise ValidationError(f"the inference measurement failed: {out.stderr.strip()[-500:]}",
                              "check that the checkpoint loads: tinylm generate --output-dir RUN.")
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_budgets(measured: dict, rss_mb: float, p95_ms: float) -> dict:
    """Compare a measurement with the budgets; ``passed`` is False if any budget is exceeded."""
    checks = [
        {"name": "peak RSS", "value": measured["peak_rss_mb"], "limit": rss_mb, "unit": "MB",
         "passed": measured["peak_rss_mb"] <= rss_mb,
         "remedy": "use a smaller vocab_size or n_embd, or fewer layers"},
        {"name": "p95 latency", "value": measured["p95_ms"], "limit": p95_ms, "unit": "ms",
         "passed": measured["p95_ms"] <= p95_ms,
         "remedy": "use fewer layers or a smaller n_embd, or generate fewer tokens per request"},
    ]
    return {"measured": measured, "checks": checks, "passed": all(c["passed"] for c in checks)}


def raise_if_budget_failed(report: dict) -> None:
    """Stop with ``ValidationError`` (exit 5) naming each exceeded budget and its remedy."""
    failed = [c for c in report["checks"] if not c["passed"]]
    if failed:
        what = "; ".join(f"{c['name']} {c['value']:.1f} {c['unit']} > {c['limit']:.0f}" for c in failed)
        raise ValidationError(f"budget exceeded: {what}", "; ".join(c["remedy"] for c in failed) + ".")


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB.

    Linux's ``VmHWM`` belongs to the address space made at exec; ``ru_maxrss`` would also
    count the parent's peak, inherited across fork, and overstate a fresh process.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def saved_activation_bytes(model, x, y, device, dtype) -> int:
    """Bytes of the tensors autograd keeps from a training step's forward pass for its backward
    pass.

    The forward pass is the one ``Trainer.train_step`` runs (``return_logits=False``: on a CPU
    the chunked loss, which keeps the output layer's gradients instead of the batch's logits).
    These activations, not the weights, are what grows with batch size and context; the
    weights (and tensors sharing their storage) are not counted.
    """
    import torch

    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(device, dtype):
        model(x.to(device), y.to(device), return_logits=False)
    return sum(kept.values())


def device_clock(device) -> float:
    """``time.perf_counter()`` once the work queued on ``device`` is done.

    GPU kernels run asynchronously: without the synchronization a clock read after
    queueing a request would time the queueing, not the request.
    """
    synchronize(device)
    return time.perf_counter()


def _child(argv: list[str]) -> None:
    """The fresh process: load, warm up, time requests, print one JSON line."""
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    for flag in ("--prompt-tokens", "--new-tokens", "--requests", "--warmup", "--threads"):
        p.add_argument(flag, type=int)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"))
    a = p.parse_args(argv)
    import numpy as np
    import torch

    from tinylm.generate import generate_ids  # torch: only the measured process loads it

    threads = set_threads(a.threads)
    device = torch.device(a.device)
    t0 = time.perf_counter()
    model, _ = load_model(Path(a.checkpoint), device)
    load_s = device_clock(device) - t0
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    times = []
    for i in range(a.warmup + a.requests):
        prompt = torch.randint(3, vocab, (a.prompt_tokens,), generator=gen).tolist()
        t = device_clock(device)
        generate_ids(model, prompt, a.new_tokens, seed=i)
        if i >= a.warmup:
            times.append((device_clock(device) - t) * 1000)
    p50, p95, p99 = np.percentile(times, [50, 95, 99]).tolist()
    gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    print(json.dumps({
        "request": {"batch": 1, "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens},
        "requests": a.requests, "threads": threads, "device": a.device,
        "load_seconds": round(load_s, 3), "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
        "ms_per_token": p50 / a.new_tokens, "peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": gpu_mb,
        "pid": os.getpid(),
    }))


if __name__ == "__main__":
    _child(sys.argv[1:])
