"""What each change of the architecture costs per training step, at the default shape.

Time to a quality is steps times seconds per step; ``benchmarks/quality/recipe_ablation.py``
counts the steps of each variant, with two runs sharing the machine, so its seconds are only
rough. This script measures the seconds alone: a default-preset ``Trainer`` (Muon, the
chunked loss, everything ``tinylm train`` does) of each variant times ``--steps`` steps on
random tokens after ``--warmup`` steps, each measurement in a fresh process, the variants
alternating round after round; it prints each variant's median step and its ratio to GPT-2's.

    python benchmarks/throughput/architecture_step.py --laptop --json benchmarks/throughput/architecture_step.json

``--laptop`` keeps PyTorch's kernels to AVX2 (``benchmarks/tools/laptop.py``); the steps are
in fp32 either way.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "tools"))
sys.path.insert(0, str(ROOT / "benchmarks" / "quality"))
import laptop  # noqa: E402
from recipe_ablation import ARCHITECTURE  # noqa: E402

#: GPT-2's architecture, each change alone and all five; positions are learned unless rotary
#: is the change (the default preset's own positions are rotary).
VARIANTS = {name: {"positions": "learned"} | change for name, change in {
    "gpt2": {}, **ARCHITECTURE,
    "all five": {k: v for change in ARCHITECTURE.values() for k, v in change.items()}}.items()}


def worker(a: argparse.Namespace) -> dict:
    """One variant in this process: warm up, then time its steps."""
    import torch

    from tinylm.config import load_preset
    from tinylm.runtime import setup_process
    from tinylm.train import Trainer
    from train_throughput import random_token_files

    cfg = load_preset("default", **VARIANTS[a.worker], languages=["en"], dtype="fp32",
                      threads=a.threads)
    setup_process(cfg.threads)
    trainer = Trainer(cfg, random_token_files(cfg.vocab_size, 200_000), progress=False)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.block_size + 1), generator=g)
               for _ in range(8)]
    seconds = []
    for i in range(a.warmup + a.steps):
        batch = batches[i % len(batches)]
        t0 = time.perf_counter()
        trainer.train_step(batch[:, :-1], batch[:, 1:], lr=1e-3)
        seconds.append(time.perf_counter() - t0)
    return {"variant": a.worker, "step_ms": 1000 * statistics.median(seconds[a.warmup:]),
            "parameters": trainer.model.num_params(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="0: one per physical core")
    p.add_argument("--laptop", action="store_true", help="AVX2 kernels only")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    if a.worker:
        sys.path.insert(0, str(ROOT / "benchmarks" / "throughput"))
        print(json.dumps(worker(a)))
        return
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for r in range(a.rounds):
        for variant in VARIANTS if r % 2 == 0 else reversed(VARIANTS):
            cmd = [sys.executable, __file__, "--worker", variant, "--steps", str(a.steps),
                   "--warmup", str(a.warmup), "--threads", str(a.threads)]
            out = subprocess.run(cmd, env=laptop.env(a.laptop), capture_output=True, text=True,
                                 check=True)
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[variant][-1]), flush=True)
    median = {v: statistics.median(r["step_ms"] for r in rs) for v, rs in runs.items()}
    print(f"\n{'variant':12} {'parameters':>11} {'ms/step':>8} {'vs gpt2':>8}")
    for v, ms in median.items():
        print(f"{v:12} {runs[v][0]['parameters']:11,} {ms:8.1f} {ms / median['gpt2']:7.2f}x")
    if a.json:
        a.json.write_text(json.dumps({
            "rounds": a.rounds, "steps": a.steps, "warmup": a.warmup, "threads": a.threads,
            "laptop": a.laptop, "kernels": laptop.check() if a.laptop else None,
            "median_step_ms": {v: round(ms, 2) for v, ms in median.items()},
            "ratio_to_gpt2": {v: round(ms / median["gpt2"], 3) for v, ms in median.items()},
            "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
