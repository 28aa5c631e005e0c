"""The expected training time of each preset on this machine: what `tinylm check --preset P`
prints, for all presets at once, as committed figures.

    python benchmarks/throughput/estimate_presets.py --json benchmarks/throughput/estimate_presets.json
    python benchmarks/throughput/estimate_presets.py --fp32 default --json benchmarks/throughput/estimate_presets.json

``--fp32 P ...`` also estimates those presets with ``--dtype fp32``, what a CPU without bf16
units trains with (entries named ``P-fp32``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=None, help="default: every preset")
    p.add_argument("--seconds", type=float, default=5.0, help="measurement per preset")
    p.add_argument("--fp32", nargs="*", default=[], help="presets to estimate in fp32 as well")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    from tinylm.config import PRESETS, load_preset
    from tinylm.estimate import count_tokens, measure_tokens_per_second, run_seconds
    from tinylm.runtime import setup_process

    setup_process(0)  # as `tinylm train` does (threads: one per physical core)
    out = {}
    runs = [(name, {}) for name in a.presets or PRESETS] + [(name, {"dtype": "fp32"}) for name in a.fp32]
    for name, overrides in runs:
        cfg = load_preset(name, **overrides)
        name += "-fp32" if overrides else ""
        tps = measure_tokens_per_second(cfg, a.seconds)
        train, val, _ = count_tokens(cfg)
        seconds = run_seconds(cfg, tps, train, val)
        out[name] = {"tokens_per_second": round(tps, 1), "train_tokens": train, "epochs": cfg.epochs,
                     "seconds": round(seconds, 1), "hours": round(seconds / 3600, 2)}
        print(f"{name:13} {tps:10,.0f} tokens/s  {seconds / 60:8.1f} minutes", flush=True)
    if a.json:
        a.json.write_text(json.dumps({"presets": out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
