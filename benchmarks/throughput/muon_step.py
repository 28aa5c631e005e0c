"""What Muon's step costs, and why its iterations are batched by shape.

Times the optimizer's step (and the whole training step) of the default shape for AdamW,
for Muon iterating matrix by matrix, and for Muon iterating once per shape (``tinylm.optim``),
each in a fresh process, under the two ways OpenMP threads wait between operations (the
``tinylm`` command's passive waiting, and libgomp's spinning default), alternated:

    python benchmarks/throughput/muon_step.py --laptop --json benchmarks/throughput/muon_step.json

``--laptop`` keeps PyTorch's kernels to AVX2 and steps in fp32 (``benchmarks/tools/laptop.py``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import laptop  # noqa: E402

VARIANTS = ("adamw", "muon, matrix by matrix", "muon, once per shape")
POLICIES = {"passive (tinylm)": {"OMP_WAIT_POLICY": "PASSIVE"}, "spinning": {}}


def worker(variant: str, steps: int, dtype: str) -> dict:
    import torch

    from tinylm.config import load_preset
    from tinylm.model import GPT, GPTConfig
    from tinylm.optim import Muon
    from tinylm.runtime import autocast, resolve_dtype, setup_process

    cfg = load_preset("default")
    setup_process(cfg.threads)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_config(cfg))
    opt = model.configure_optimizer(cfg.learning_rate, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                                    "adamw" if variant == "adamw" else "muon")
    # matrix by matrix: one Muon per matrix, so that each iterates alone
    alone = [Muon([p], cfg.learning_rate, cfg.muon_momentum, cfg.weight_decay)
             for group in opt.muon.param_groups for p in group["params"]] \
        if variant == "muon, matrix by matrix" else []

    def step() -> None:
        if not alone:
            return opt.step()
        for muon in alone:
            muon.step()
        opt.adamw.step()

    x = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.block_size))
    y = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.block_size))
    device, amp = torch.device("cpu"), resolve_dtype(dtype, torch.device("cpu"))
    optimizer_s, step_s = [], []
    for i in range(steps + 3):  # three to warm up
        t0 = time.perf_counter()
        with autocast(device, amp):
            _, loss = model(x, y, return_logits=False)
        loss.backward()
        t1 = time.perf_counter()
        step()
        opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if i >= 3:
            optimizer_s.append(t2 - t1)
            step_s.append(t2 - t0)
    return {"optimizer_ms": 1000 * statistics.median(optimizer_s),
            "step_ms": 1000 * statistics.median(step_s)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--laptop", action="store_true", help="AVX2 kernels only, fp32")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "auto"))
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    dtype = "fp32" if a.laptop else a.dtype
    if a.worker:
        print(json.dumps(worker(a.worker, a.steps, dtype)))
        return
    clean = {k: v for k, v in laptop.env(a.laptop).items()
             if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    found: dict[str, dict[str, list[dict]]] = {pol: {v: [] for v in VARIANTS} for pol in POLICIES}
    for r in range(a.rounds):
        for policy, env in POLICIES.items():
            for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                out = subprocess.run([sys.executable, __file__, "--worker", variant, "--steps",
                                      str(a.steps), "--dtype", dtype],
                                     env=clean | env, check=True,
                                     capture_output=True, text=True, timeout=900).stdout
                found[policy][variant].append(json.loads(out.strip().splitlines()[-1]))
    median = {pol: {v: {k: statistics.median(row[k] for row in rows) for k in rows[0]}
                    for v, rows in by.items()} for pol, by in found.items()}
    for pol, by in median.items():
        for v, m in by.items():
            print(f"{pol:17} {v:24} optimizer {m['optimizer_ms']:6.1f} ms, "
                  f"step {m['step_ms']:6.1f} ms")
    if a.json:
        a.json.write_text(json.dumps({"laptop": a.laptop, "dtype": dtype, "rounds": a.rounds,
                                      "steps": a.steps, "kernels": laptop.check() if a.laptop
                                      else None, "median": median, "runs": found},
                                     indent=2) + "\n")


if __name__ == "__main__":
    main()
