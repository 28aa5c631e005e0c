"""Recompute the derived fields of the committed results from the current model code.

The committed JSON files record measurements (losses, times, tokens/s) that only a new run
can change, and a few figures derived from the model's shape by tinylm's code: the
parameter counts and FLOPs per token of ``book/reference/training_metrics.json``, and the
MFU of ``benchmarks/throughput/train_throughput.json`` (measured tokens/s x FLOPs per token
/ measured matmul rate). When that code changes (a corrected FLOP formula), this script
brings the derived fields up to date without retraining; measurements stay exactly as they
were.

    python benchmarks/tools/refresh_reference.py           # rewrite what changed, print each change
    python benchmarks/tools/refresh_reference.py --check   # exit 1 if anything is out of date
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from tinylm.model import GPT, GPTConfig
from tinylm.report import BENCHMARKS_DIR, REFERENCE_DIR

#: The model settings a result may record; one recorded before the architecture was a
#: setting has none of those, and its model is GPT-2's (``GPTConfig``'s defaults).
SETTINGS = tuple(f.name for f in dataclasses.fields(GPTConfig))


def _model(shape: dict) -> GPT:
    return GPT(GPTConfig(**{k: shape[k] for k in SETTINGS if k in shape}))


def training_metrics(m: dict) -> dict:
    """``training_metrics.json`` with its model counts recomputed (as ``Trainer.metrics``)."""
    model = _model(m["model"])
    return {**m, "model": {**m["model"], "parameters": model.num_params(),
                           "non_embedding_parameters": model.num_params(non_embedding=True),
                           "flops_per_token": model.flops_per_token()}}


def throughput(r: dict) -> dict:
    """``train_throughput.json`` (``train_throughput.py --json``) with its MFU recomputed."""
    flops = _model(r["shape"]).flops_per_token()
    tps, rate = r["median_tokens_per_s"], {k: v * 1e12 for k, v in r["matmul_tflops"].items()}
    out = {**r, "mfu": {**r["mfu"], "reference_vs_fp32": tps["reference"] * flops / rate["fp32"],
                        "tinylm_vs_bf16": tps["tinylm"] * flops / rate["bf16"],
                        "tinylm_vs_fp32": tps["tinylm"] * flops / rate["fp32"]}}
    if "step_matmuls_ms" in r:  # a step of nothing but its matrix products
        step = flops * r["shape"]["batch_size"] * r["shape"]["block_size"]
        out["mfu_ceiling"] = {dt: step / (ms / 1000) / rate[dt] for dt, ms in r["step_matmuls_ms"].items()}
    return out


#: Each committed file, how it is rewritten, and how its producer formats it.
FILES = [(REFERENCE_DIR / "training_metrics.json", training_metrics,
          dict(indent=2, ensure_ascii=False), "\n"),
         (BENCHMARKS_DIR / "throughput" / "train_throughput.json", throughput, dict(indent=2), "")]


def _changes(old, new, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for k in new for c in _changes(old.get(k), new[k], f"{path}.{k}" if path else k)]
    return [] if old == new else [f"{path}: {old} -> {new}"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if out of date")
    a = p.parse_args()
    stale = False
    for path, refresh, style, end in FILES:
        old = json.loads(path.read_text(encoding="utf-8"))
        new = refresh(old)
        for change in _changes(old, new):
            print(f"{path.name}: {change}")
            stale = True
        if not a.check and new != old:
            path.write_text(json.dumps(new, **style) + end, encoding="utf-8")
    if a.check and stale:
        print("out of date: run python benchmarks/tools/refresh_reference.py", file=sys.stderr)
    return 1 if a.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
