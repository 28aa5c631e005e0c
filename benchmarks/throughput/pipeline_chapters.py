"""The chapters outside training: this checkout's pipeline against a baseline commit's.

Runs ``tinylm pipeline`` on copies of a trained run (``RUN``), with the code of ``--baseline``
(checked out in a git worktree) and with this checkout's code, alternately, each a fresh
command. The model is trained already, so each pipeline executes every chapter but trains
nothing and prints no estimate: its seconds are those of the chapters outside training
(chapter 5's other cells included; its samples and budgets are measured again, as in any
pipeline). Reports each chapter's seconds and the command's, and the ratio of the medians.

    python benchmarks/throughput/pipeline_chapters.py runs/default --baseline 0c2b0f3 --laptop \\
        --rounds 2 --json benchmarks/throughput/pipeline_chapters.json

The run must count as trained for both codes, or the command would train it. A change to a
module that training's fingerprint covers (``stages.STAGE_CODE``) makes the baseline's code
see the run as untrained even when the model is the same: then ``--baseline-run`` names a run
the baseline's code trained (``PYTHONPATH=<worktree> tinylm train ...``). ``--laptop``
keeps PyTorch's kernels to AVX2 (``benchmarks/tools/laptop.py``).
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


def pipeline(code: Path, trained: Path, out: Path, laptop_class: bool) -> dict:
    """One ``tinylm pipeline`` with the package of ``code`` on a fresh copy of ``trained``."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(trained, out, ignore=shutil.ignore_patterns("notebooks", "pipeline.json"))
    env = {**laptop.env(laptop_class), "PYTHONPATH": str(code)}
    cfg = json.loads((trained / "config.json").read_text())  # the run's preset and precision
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tinylm.cli", "pipeline", "--preset", cfg["name"],
                           "--dtype", cfg["dtype"], "--output-dir", str(out)],
                          env=env, cwd=code, check=True, capture_output=True, text=True)
    seconds = round(time.perf_counter() - t0, 1)
    summary = json.loads((out / "pipeline.json").read_text())
    if "== training\n" in done.stderr:  # the copy did not count as trained: not this benchmark
        raise SystemExit(f"{code}: the pipeline trained {trained} again; use a run this code made")
    return {"seconds": seconds, "command_seconds": summary["command_seconds"],
            "chapters": summary["chapters"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a trained run directory (e.g. runs/default)")
    p.add_argument("--baseline", required=True, help="the git commit to compare with")
    p.add_argument("--baseline-run", type=Path, default=None,
                   help="a run the baseline's code trained (default: RUN)")
    p.add_argument("--rounds", type=int, default=2, help="pairs of runs, alternating the order")
    p.add_argument("--laptop", action="store_true", help="AVX2 kernels only")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "pipeline-chapters")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    trained = {"new": a.run, "baseline": a.baseline_run or a.run}
    for run in trained.values():
        if not (run / "checkpoints" / "final.pt").is_file():
            raise SystemExit(f"{run} holds no trained model (checkpoints/final.pt)")
    a.work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {"baseline": [], "new": []}
    with baseline.worktree(a.baseline, a.work / "baseline-code") as (base, commit):
        for r, name in baseline.alternate(a.rounds):
            row = pipeline(base if name == "baseline" else ROOT, trained[name].resolve(),
                           a.work / name, a.laptop)
            runs[name].append(row)
            slowest = sorted(row["chapters"].items(), key=lambda kv: -kv[1])[:3]
            print(f"round {r + 1} {name}: {row['command_seconds']:.1f} s "
                  f"(slowest: {', '.join(f'{c[:2]} {s:.1f} s' for c, s in slowest)})", flush=True)
    median = {k: {"command_seconds": statistics.median(r["command_seconds"] for r in v),
                  "chapters": {c: statistics.median(r["chapters"][c] for r in v)
                               for c in v[0]["chapters"]}}
              for k, v in runs.items()}
    ratio = median["new"]["command_seconds"] / median["baseline"]["command_seconds"]
    print(f"\nbaseline {commit[:7]}: {median['baseline']['command_seconds']:.1f} s; "
          f"new: {median['new']['command_seconds']:.1f} s: {ratio:.2f}x")
    for chapter, seconds in median["baseline"]["chapters"].items():
        print(f"  {chapter:20} {seconds:5.1f} s -> {median['new']['chapters'][chapter]:5.1f} s")
    if a.json:
        a.json.write_text(json.dumps({
            "baseline_commit": commit, "run": str(a.run),
            "baseline_run": str(trained["baseline"]), "laptop": a.laptop, "cpu": baseline.cpu_name(),
            "cores": os.cpu_count(), "kernels": laptop.check(), "runs": runs, "median": median,
            "time_ratio": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()
