"""Time to the default's quality: this checkout's default preset against a baseline commit's.

Trains ``--preset default`` with the code of ``--baseline`` (checked out in a git worktree)
and with this checkout's code, alternately, each in a fresh process with the same corpus
settings, so both are evaluated on the same held-out text (each model with its own
tokenizer). Reports each run's training seconds (``training_metrics.json``: steps and
evaluations) and final validation bits per byte, and the ratio of the medians: the new
recipe's time to a quality at least the baseline's, when its bits per byte are not worse.

    python benchmarks/quality/time_to_default_quality.py --baseline 2ff29aa --laptop \\
        --json benchmarks/quality/time_to_default_quality.json
    python benchmarks/quality/time_to_default_quality.py --baseline 2ff29aa --dtype auto \\
        --json benchmarks/quality/time_to_default_quality_bf16.json

``--laptop`` keeps PyTorch's kernels to AVX2 and trains in fp32 (``benchmarks/tools/laptop.py``):
the class of most laptops, on a bigger CPU. ``--set KEY=VALUE`` changes a setting of the new
code's runs only (an ablation).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "tools"))
import baseline  # noqa: E402
import laptop  # noqa: E402


def train(code: Path, out: Path, dtype: str, laptop_class: bool, extra: list[str]) -> dict:
    """One fresh ``tinylm train --preset default`` with the package of ``code``; its figures."""
    env = {**laptop.env(laptop_class), "PYTHONPATH": str(code)}
    # a finished run with the same model settings counts as trained, --fresh or not, and the
    # speed settings (nproc, threads) are not among them: only an empty folder trains again
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "tinylm.cli", "train", "--preset", "default",
               "--output-dir", str(out), "--quiet", "--no-eval", "--dtype", dtype,
               *extra]
    t0 = time.perf_counter()
    subprocess.run(command, env=env, cwd=code, check=True)
    m = json.loads((out / "training_metrics.json").read_text())
    final = m["history"][-1]
    return {"command_seconds": round(time.perf_counter() - t0, 1),
            "train_seconds": m["timing"]["train_seconds"],
            "tokens_per_second": m["timing"]["tokens_per_second"],
            "steps": m["history"][-1]["step"], "epochs": m["hyperparameters"]["epochs"],
            "val_bpb": final["val_bpb"], "val_bpb_by_epoch": [h["val_bpb"] for h in m["history"]],
            "optimizer": m["hyperparameters"].get("optimizer", "adamw"),
            "environment": {k: m["environment"].get(k) for k in ("dtype", "threads", "torch")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", required=True, help="the git commit of the recipe to beat")
    p.add_argument("--rounds", type=int, default=1, help="pairs of runs, alternating the order")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "auto", "bf16"))
    p.add_argument("--laptop", action="store_true", help="AVX2 kernels only, fp32")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="settings of the new code's runs (an ablation)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "time-to-default-quality")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    dtype = "fp32" if a.laptop else a.dtype
    extra = [x for kv in a.set for x in (f"--{kv.split('=')[0].replace('_', '-')}",
                                          kv.split("=", 1)[1])]
    a.work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {"baseline": [], "new": []}
    with baseline.worktree(a.baseline, a.work / "baseline-code") as (base, commit):
        for r, name in baseline.alternate(a.rounds):
            code, flags = (base, []) if name == "baseline" else (ROOT, extra)
            row = train(code, a.work / name, dtype, a.laptop, flags)
            runs[name].append(row)
            print(f"round {r + 1} {name}: {row['train_seconds']:.0f} s training, "
                  f"{row['steps']} steps, bpb {row['val_bpb']:.4f} "
                  f"({row['tokens_per_second']:.0f} tokens/s)", flush=True)
    median = {k: {f: statistics.median(r[f] for r in v) for f in ("train_seconds", "val_bpb")}
              for k, v in runs.items()}
    ratio = median["new"]["train_seconds"] / median["baseline"]["train_seconds"]
    reached = median["new"]["val_bpb"] <= median["baseline"]["val_bpb"]
    print(f"\nbaseline {commit[:7]}: {median['baseline']['train_seconds']:.0f} s, "
          f"bpb {median['baseline']['val_bpb']:.4f}")
    print(f"new: {median['new']['train_seconds']:.0f} s, bpb {median['new']['val_bpb']:.4f}")
    print(f"time to the baseline's quality: {ratio:.2f}x" if reached else
          f"the new recipe did not reach the baseline's quality ({ratio:.2f}x the time)")
    if a.json:
        a.json.write_text(json.dumps({
            "baseline_commit": commit, "dtype": dtype, "laptop": a.laptop, "set": a.set,
            "cpu": baseline.cpu_name(), "cores": os.cpu_count(), "kernels": laptop.check(),
            "runs": runs, "median": median, "time_ratio": ratio,
            "reached_baseline_quality": reached}, indent=2) + "\n")


if __name__ == "__main__":
    main()
