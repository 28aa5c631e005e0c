"""Inference latency and memory of a trained model, measured in a fresh process.

A request is a 16-token prompt and 64 new tokens at batch 1 (KV cache, fp32, sampling).
Prints p50/p95/p99 latency, ms per token and the peak resident memory of the process.

    python benchmarks/serving/inference.py runs/default/checkpoints/final.pt
    python benchmarks/serving/inference.py runs/default/checkpoints/final.pt --threads 2 --requests 100
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tinylm.budget import measure_inference
from tinylm.runtime import use_passive_openmp_wait


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="0 = one per physical core")
    a = p.parse_args()
    use_passive_openmp_wait()  # the measuring process waits as the tinylm command's do
    r = measure_inference(a.checkpoint, a.prompt_tokens, a.new_tokens, a.requests, threads=a.threads)
    print(json.dumps(r, indent=2))
    print(f"p50 {r['p50_ms']:.1f} ms  p95 {r['p95_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  "
          f"({r['ms_per_token']:.2f} ms/token)  peak RSS {r['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
