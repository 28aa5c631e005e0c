"""Two training processes of one thread each against one process of two threads, on one machine.

    python benchmarks/throughput/ddp_vs_threads.py                     # default preset, 2 epochs, 2 rounds
    python benchmarks/throughput/ddp_vs_threads.py --preset quick --epochs 1 --rounds 1
    python benchmarks/throughput/ddp_vs_threads.py --json benchmarks/throughput/ddp_vs_threads.json   # to cite

Builds the corpus, tokenizer and token files once, then alternates ``tinylm train --threads
2`` and ``tinylm train --nproc 2 --threads 1``, each from scratch in its own copy (samples and
budgets skipped), and prints every run's wall time (the whole command: start-up, training,
evaluation), its training tokens/s and final validation loss, and the medians. Last, it
times what data parallelism adds to each step besides the gradients' all-reduce: the
all-reduce of the step's loss and the stop flag (``tinylm.distributed.agree``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINYLM = [sys.executable, "-m", "tinylm.cli"]
VARIANTS = {"1 process x 2 threads": ["--threads", "2"],
            "2 processes x 1 thread": ["--nproc", "2", "--threads", "1"]}


def agree_worker(calls: int) -> None:
    """Under torchrun: microseconds per ``distributed.agree`` call, printed by rank 0."""
    from tinylm import distributed
    from tinylm.runtime import setup_process

    setup_process(1)
    with distributed.process_group("cpu"):
        for _ in range(100):  # warm up the connections
            distributed.agree(1.0, None)
        t0 = time.perf_counter()
        for _ in range(calls):
            distributed.agree(1.0, None)
        seconds = time.perf_counter() - t0
        if distributed.is_master():
            print(json.dumps({"us_per_call": 1e6 * seconds / calls}))


def train(run_dir: Path, preset: str, epochs: int, extra: list[str]) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([*TINYLM, "train", "--preset", preset, "--epochs", str(epochs),
                          "--output-dir", str(run_dir), "--no-eval", "--quiet", "--fresh", *extra],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    if out.returncode:
        sys.exit(f"tinylm train failed ({out.returncode}):\n{out.stderr[-3000:]}")
    m = json.loads((run_dir / "training_metrics.json").read_text())
    return {"wall_seconds": round(wall, 1), "train_seconds": m["timing"]["train_seconds"],
            "tokens_per_second": m["timing"]["tokens_per_second"],
            "final_val_loss": m["final_val_loss"], "steps": m["history"][-1]["step"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="alternations of the two variants")
    p.add_argument("--calls", type=int, default=2000, help="all-reduces timed for the step cost")
    p.add_argument("--agree-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write every run and the medians to this file")
    a = p.parse_args()
    if a.agree_worker:
        return agree_worker(a.calls)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the tinylm command sets it
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared"
        from tinylm.config import load_preset
        from tinylm.stages import Run

        Run(prepared, load_preset(a.preset, epochs=a.epochs), progress=False).tokens()
        results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
        for r in range(a.rounds):
            for name, extra in VARIANTS.items():
                run_dir = Path(tmp) / f"{r}-{len(results[name])}-{extra[1]}"
                shutil.copytree(prepared, run_dir)
                results[name].append(train(run_dir, a.preset, a.epochs, extra))
                shutil.rmtree(run_dir)
                print(f"round {r + 1}, {name}: {json.dumps(results[name][-1])}", flush=True)
    print(f"\n{a.preset} preset, {a.epochs} epoch(s), {a.rounds} round(s); medians:")
    medians = {}
    for name, runs in results.items():
        med = medians[name] = {k: statistics.median(run[k] for run in runs)
                               for k in ("wall_seconds", "train_seconds", "tokens_per_second", "final_val_loss")}
        print(f"  {name:24} wall {med['wall_seconds']:7.1f} s   training {med['train_seconds']:7.1f} s   "
              f"{med['tokens_per_second']:9,.0f} tokens/s   final val loss {med['final_val_loss']:.4f}")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", __file__, "--agree-worker", "--calls", str(a.calls)],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode:
        sys.exit(f"timing the all-reduce failed:\n{out.stderr[-3000:]}")
    us = json.loads(out.stdout.strip().splitlines()[-1])["us_per_call"]
    ddp = results["2 processes x 1 thread"]
    step_ms = 1e3 * statistics.median(run["train_seconds"] / run["steps"] for run in ddp)
    print(f"  the loss and stop-flag all-reduce: {us:.0f} us per step, {us / 10 / step_ms:.1f}% of a "
          f"{step_ms:.1f} ms data-parallel step")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "preset": a.preset, "epochs": a.epochs, "rounds": a.rounds, "runs": results,
            "medians": medians, "agree_us_per_step": us, "data_parallel_step_ms": step_ms}, indent=2) + "\n")


if __name__ == "__main__":
    main()
