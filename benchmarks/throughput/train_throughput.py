"""Training throughput: the tinylm trainer against a plain PyTorch loop, same model.

Each measurement runs in a fresh subprocess (allocator settings and compile caches are
per process), alternating tinylm and the reference several times; we print the medians,
the ratio, and model FLOPs utilisation (MFU) against this machine's own measured fp32 and
bf16 matmul rates, with the MFU a step made of nothing but its matrix products would reach
(its ceiling at this shape: the products of a small model are small and run below the rate
of a large square one).

    python benchmarks/throughput/train_throughput.py                 # default shape, 5 rounds
    python benchmarks/throughput/train_throughput.py --rounds 3 --vocab-size 2048 --json out.json
    python benchmarks/throughput/train_throughput.py --without keep_freed_memory   # what one setting buys
    python benchmarks/throughput/train_throughput.py --without chunked_loss --without fused_attention
    python benchmarks/throughput/train_throughput.py --laptop --optimizer muon   # AVX2 kernels, fp32

``--laptop`` keeps PyTorch's kernels to AVX2 and trains in fp32, as on most laptops
(``benchmarks/tools/laptop.py``). The summary's ``tinylm_step_over_matmuls`` is a tinylm step's
time over that of its matrix products alone in the same dtype: how far the step is from the
limit of these kernels at this shape.

The reference is what a tutorial would write: fp32, eager, ``torch.optim.AdamW`` with its
defaults, no allocator tuning. Both see the same random token batches.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import laptop  # noqa: E402


def _model_args(a: argparse.Namespace) -> dict:
    return dict(vocab_size=a.vocab_size, block_size=a.block_size, n_layer=a.n_layer,
                n_head=a.n_head, n_embd=a.n_embd, dropout=a.dropout, positions=a.positions)


def random_token_files(vocab_size: int, n: int):
    """A temporary token folder (train.bin, val.bin, meta.json) of ``n`` random English tokens:
    what a Trainer needs to time its steps without building a corpus."""
    import tempfile
    from pathlib import Path

    import numpy as np

    tmp = Path(tempfile.mkdtemp())
    tokens = np.random.default_rng(0).integers(0, vocab_size, n).astype(np.uint16)
    for split in ("train", "val"):
        tokens.tofile(tmp / f"{split}.bin")
    meta = {"vocab_size": vocab_size, "special_ids": {"<|endoftext|>": 0, "<|en|>": 1},
            "spans": {s: [[0, n, "en"]] for s in ("train", "val")},
            "splits": {"val": {"en": {"tokens_per_byte": 0.3}}}}
    (tmp / "meta.json").write_text(json.dumps(meta))
    return tmp


def worker(a: argparse.Namespace) -> dict:
    """One measurement: warm up, then time ``a.steps`` steps; print tokens/s as JSON."""
    import torch

    from tinylm.model import GPT, GPTConfig

    cfg = GPTConfig(**_model_args(a))
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.vocab_size, (a.batch_size, cfg.block_size + 1), generator=g)
               for _ in range(8)]
    torch.set_num_threads(a.threads)
    if a.worker == "reference":
        torch.manual_seed(0)
        model = GPT(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)

        def step(batch):
            _, loss = model(batch[:, :-1], batch[:, 1:])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            return loss.item()
    else:
        from tinylm.config import Config
        from tinylm.runtime import setup_process
        from tinylm.train import Trainer

        tmp = random_token_files(cfg.vocab_size, 50_000)
        tc = Config(**_model_args(a), batch_size=a.batch_size, languages=["en"], threads=a.threads,
                    dtype=a.dtype, compile=a.compile, optimizer=a.optimizer)
        setup_process(a.threads)  # what the tinylm command does before it trains
        if a.undo == "keep_freed_memory":  # glibc's defaults again: return freed memory to the OS
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-4, 65536)  # M_MMAP_MAX
            libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
            libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        elif a.undo == "flush_denormal":
            torch.set_flush_denormal(False)
        trainer = Trainer(tc, tmp, progress=False)
        if a.undo == "chunked_loss":  # the plain loss over the whole batch's logits
            forward = trainer.forward
            trainer.forward = lambda x, y, return_logits: forward(x, y)
        elif a.undo == "fused_attention":  # bf16 matmuls around an fp32 softmax, by hand
            import tinylm.model

            tinylm.model.attention_kernel = lambda *args, **kwargs: "by_hand"

        def step(batch):
            return trainer.train_step(batch[:, :-1], batch[:, 1:], lr=1e-3).loss
    t0 = time.perf_counter()
    for i in range(a.warmup):
        step(batches[i % len(batches)])
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(a.steps):
        step(batches[i % len(batches)])
    dt = time.perf_counter() - t0
    flops = GPT(cfg).flops_per_token()
    return {"worker": a.worker, "tokens_per_s": a.steps * a.batch_size * cfg.block_size / dt,
            "step_ms": 1000 * dt / a.steps, "warmup_s": warm_s, "flops_per_token": flops,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def matmul_rate(dtype_name: str, threads: int, n: int = 1024, reps: int = 20) -> float:
    """Measured FLOP/s of an n x n matmul in the given dtype on this machine."""
    import torch

    torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def step_matmuls_seconds(a: argparse.Namespace, dtype_name: str, reps: int = 20) -> float:
    """Median seconds of a training step's matrix products alone, at their exact shapes.

    Every linear layer's forward product and its two backward ones (input and weight
    gradients), the output layer's likewise, and attention's six batched products per layer
    (QK^T and AV, forward and backward), on random data in the given dtype, one after the
    other with nothing in between: the time no implementation of this step can beat with
    these kernels, so ``flops_per_token`` over it is the highest MFU the shape allows here.
    """
    import torch

    torch.set_num_threads(a.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    m, d, t = a.batch_size * a.block_size, a.n_embd, a.block_size
    bh, hd = a.batch_size * a.n_head, a.n_embd // a.n_head

    def rnd(*shape):
        return torch.randn(*shape, dtype=dtype)

    products = []
    for k, n, times in [(d, 3 * d, a.n_layer), (d, d, a.n_layer), (d, 4 * d, a.n_layer),
                        (4 * d, d, a.n_layer), (d, a.vocab_size, 1)]:
        x, w, dy = rnd(m, k), rnd(n, k), rnd(m, n)
        products += [lambda x=x, w=w: x @ w.t(), lambda dy=dy, w=w: dy @ w,
                     lambda dy=dy, x=x: dy.t() @ x] * times
    q, kt, p = rnd(bh, t, hd), rnd(bh, hd, t), rnd(bh, t, t)  # (T, hd), (hd, T), (T, T) per head
    products += [lambda: q @ kt, lambda: p @ q,  # scores QK^T, then their weights times V
                 lambda: q @ kt, lambda: p.transpose(1, 2) @ q,  # AV's backward: dP, dV
                 lambda: p @ q, lambda: p.transpose(1, 2) @ q] * a.n_layer  # QK^T's: dQ, dK
    seconds = []
    for i in range(reps + 3):
        t0 = time.perf_counter()
        for product in products:
            product()
        if i >= 3:  # the first three warm the kernels up
            seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds)


def main() -> None:
    from tinylm.config import Config

    d = Config()  # the default preset's shape
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", choices=["reference", "tinylm"], help=argparse.SUPPRESS)
    p.add_argument("--undo", default=None, help=argparse.SUPPRESS)
    p.add_argument("--without", action="append", default=[],
                   choices=["keep_freed_memory", "flush_denormal", "chunked_loss", "fused_attention"],
                   help="also time tinylm without this setting (one more worker each; repeatable)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=d.vocab_size)
    p.add_argument("--block-size", type=int, default=d.block_size)
    p.add_argument("--n-layer", type=int, default=d.n_layer)
    p.add_argument("--n-head", type=int, default=d.n_head)
    p.add_argument("--n-embd", type=int, default=d.n_embd)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--positions", default=d.positions, choices=("learned", "rotary"))
    p.add_argument("--dtype", default="auto", help="tinylm's dtype (auto, bf16, fp32)")
    p.add_argument("--compile", action="store_true", help="tinylm with torch.compile")
    p.add_argument("--optimizer", default=d.optimizer, help="tinylm's optimizer (adamw, muon)")
    p.add_argument("--laptop", action="store_true", help="AVX2 kernels only, tinylm in fp32")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    a = p.parse_args()
    if a.laptop:  # before torch is imported, here and in every worker
        assert "torch" not in sys.modules
        os.environ.update(laptop.ENV)
        a.dtype = "fp32"
    if a.worker:
        print(json.dumps(worker(a)))
        return
    from tinylm.runtime import use_passive_openmp_wait

    use_passive_openmp_wait()  # both workers wait as the tinylm command's processes do
    passthrough, skip = [], False  # the worker's arguments: all but --json and --without
    for arg in sys.argv[1:]:
        if not skip and not arg.startswith(("--json", "--without")):
            passthrough.append(arg)
        skip = arg in ("--json", "--without") and not skip
    withouts = {f"tinylm without {w}": w for w in a.without}
    results: dict[str, list[dict]] = {"reference": [], "tinylm": []} | {w: [] for w in withouts}
    for r in range(a.rounds):
        for who in results:
            cmd = [sys.executable, __file__, "--worker", who.split()[0], *passthrough]
            if who in withouts:
                cmd += ["--undo", withouts[who]]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results[who].append(res)
            print(f"round {r + 1}: {who:30} {res['tokens_per_s']:9.0f} tok/s  "
                  f"{res['step_ms']:7.1f} ms/step", flush=True)
    med = {w: statistics.median(x["tokens_per_s"] for x in v) for w, v in results.items()}
    # a laptop has no bf16 units: its bf16 products are emulated, so only fp32 is measured
    dtypes = ("fp32",) if a.laptop else ("fp32", "bf16")
    rate = {dt: matmul_rate(dt, a.threads) for dt in dtypes}
    flops = results["tinylm"][0]["flops_per_token"]
    step_flops = flops * a.batch_size * a.block_size
    matmuls_s = {dt: step_matmuls_seconds(a, dt) for dt in dtypes}
    summary = {
        "shape": _model_args(a) | {"batch_size": a.batch_size}, "threads": a.threads,
        "dtype": a.dtype, "compile": a.compile,
        "median_tokens_per_s": med, "ratio": med["tinylm"] / med["reference"],
        "matmul_tflops": {dt: r / 1e12 for dt, r in rate.items()},
        "mfu": {"reference_vs_fp32": med["reference"] * flops / rate["fp32"]}
               | {f"tinylm_vs_{dt}": med["tinylm"] * flops / r for dt, r in rate.items()},
        # a step of nothing but its matrix products, at this shape: the MFU ceiling
        "step_matmuls_ms": {dt: 1000 * s for dt, s in matmuls_s.items()},
        "mfu_ceiling": {dt: step_flops / matmuls_s[dt] / rate[dt] for dt in dtypes},
        "tinylm_warmup_s": statistics.median(x["warmup_s"] for x in results["tinylm"]),
        "laptop": a.laptop, "optimizer": a.optimizer,
        "cpu_capability": results["tinylm"][0]["cpu_capability"],
        "tinylm_step_ms": statistics.median(x["step_ms"] for x in results["tinylm"]),
    }
    if a.dtype in ("fp32", "bf16"):  # auto: whichever the machine picks
        summary["tinylm_step_over_matmuls"] = (summary["tinylm_step_ms"]
                                               / summary["step_matmuls_ms"][a.dtype])
    for who in withouts:
        summary[f"ratio_tinylm_to_{who.replace(' ', '_')}"] = med["tinylm"] / med[who]
    print(json.dumps(summary, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
