"""How OpenMP threads wait between parallel regions, on an idle and on a busy machine.

torch's CPU kernels run on OpenMP (GNU libgomp in the Linux wheels). A thread that finishes
its part of an operation early either spins, burning its core until the next operation
arrives, or sleeps. Spinning is fastest when the machine is ours alone; when another program
wants the core, a spinning thread takes it from the thread that has work. This script times
the tinylm trainer (``train_throughput.py``'s worker, default shape) under several waiting
policies, each in a fresh process (OpenMP reads them when torch loads), alternated:

- idle: one training alone;
- busy: two trainings at once (two runs, or a run and anything else), each figure the mean
  of the two.

    python benchmarks/throughput/openmp_wait.py                          # 3 rounds
    python benchmarks/throughput/openmp_wait.py --rounds 2 --json benchmarks/throughput/openmp_wait.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

THROUGHPUT = Path(__file__).with_name("train_throughput.py")
#: name -> environment: libgomp spins GOMP_SPINCOUNT times (300,000 by default, without a
#: policy), then sleeps; PASSIVE sleeps at once.
POLICIES = {
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 1k": {"GOMP_SPINCOUNT": "1000"},
    "spin 3k": {"GOMP_SPINCOUNT": "3000"},
    "spin 10k": {"GOMP_SPINCOUNT": "10000"},
    "spin 100k": {"GOMP_SPINCOUNT": "100000"},
    "libgomp default": {},
}


def _start(env: dict, args: argparse.Namespace) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    cmd = [sys.executable, str(THROUGHPUT), "--worker", "tinylm", "--n-layer", str(args.n_layer),
           "--steps", str(args.steps), "--threads", str(args.threads)]
    return subprocess.Popen(cmd, env=clean | env, stdout=subprocess.PIPE, text=True)


def _rate(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"a worker failed ({proc.returncode})"
    return json.loads(out.strip().splitlines()[-1])["tokens_per_s"]


def main() -> None:
    from tinylm.config import Config

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-layer", type=int, default=Config().n_layer)
    p.add_argument("--json", default=None, help="also write the figures to this file")
    a = p.parse_args()
    seen: dict[str, dict[str, list[float]]] = {name: {"idle": [], "busy": []} for name in POLICIES}
    for r in range(a.rounds):
        for name, env in POLICIES.items():
            seen[name]["idle"].append(_rate(_start(env, a)))
            pair = [_start(env, a), _start(env, a)]
            seen[name]["busy"].append(statistics.mean(_rate(proc) for proc in pair))
            print(f"round {r + 1}: {name:16} idle {seen[name]['idle'][-1]:8,.0f} tok/s   "
                  f"busy (each of two) {seen[name]['busy'][-1]:8,.0f} tok/s", flush=True)
    summary = {"threads": a.threads, "n_layer": a.n_layer, "rounds": a.rounds,
               "median_tokens_per_s": {name: {k: statistics.median(v) for k, v in runs.items()}
                                       for name, runs in seen.items()}}
    med = summary["median_tokens_per_s"]
    summary["relative_to_passive"] = {name: {k: v / med["passive"][k] for k, v in m.items()}
                                      for name, m in med.items()}
    print(json.dumps(summary, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
