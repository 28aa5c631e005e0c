"""How much does the seed move the result? Final validation loss of a preset over seeds.

    .venv/bin/python benchmarks/quality/seed_variance.py --preset quick --seeds 1337 1 2
    .venv/bin/python benchmarks/quality/seed_variance.py --preset default --out runs/seeds --no-repeat \
        --json benchmarks/quality/seed_variance.json

Each seed changes the corpus split, the tokenizer's training text and the weight init, so
this is the spread a reader sees between honest re-runs. The first seed is trained twice to
show that the same seed gives the same figures (``--no-repeat`` skips that). Prints one line
per run and the spread (max - min) / mean of the final validation loss, which the project
keeps under 5%. With ``--out``, a run already finished there with the same settings (a copy
of ``make pipeline``'s runs/default as ``--out``/1337, say) is read, not trained again.

``--dtype fp32`` with the variables of ``benchmarks/tools/laptop.py`` set in the shell trains
as the laptop class does (the reference run's way):

    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
        .venv/bin/python benchmarks/quality/seed_variance.py --preset default --dtype fp32 ...
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from tinylm.config import load_preset
from tinylm.runtime import setup_process
from tinylm.stages import Run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--seeds", type=int, nargs="+", default=[1337, 1, 2])
    p.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    p.add_argument("--repeat", action=argparse.BooleanOptionalAction, default=True,
                   help="train the first seed twice, to show it gives the same figures")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--dtype", default=None, choices=("auto", "bf16", "fp32"),
                   help="the runs' dtype (default: the preset's)")
    args = p.parse_args()
    settings = {} if args.dtype is None else {"dtype": args.dtype}
    setup_process(load_preset(args.preset).threads)  # as `tinylm train` does
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        runs = [(str(s), s) for s in args.seeds]
        runs += [(f"{args.seeds[0]}-again", args.seeds[0])] if args.repeat else []
        results = {}
        for label, seed in runs:
            t0 = time.perf_counter()
            metrics = Run(root / label, load_preset(args.preset, seed=seed, **settings),
                          progress=False).train()
            results[label] = {"final_val_loss": metrics["final_val_loss"],
                              "history": [[h["train_loss"], h["val_loss"]] for h in metrics["history"]],
                              "seconds": round(time.perf_counter() - t0, 1),
                              "train_seconds": metrics["timing"]["train_seconds"],
                              "dtype": metrics["environment"]["dtype"]}
            print(f"seed {label:>10}: final val loss {metrics['final_val_loss']:.4f} "
                  f"({results[label]['seconds']:.0f} s)", flush=True)
    losses = [results[str(s)]["final_val_loss"] for s in args.seeds]
    mean = sum(losses) / len(losses)
    same = (results[str(args.seeds[0])]["history"] == results[f"{args.seeds[0]}-again"]["history"]
            if args.repeat else None)
    spread = (max(losses) - min(losses)) / mean
    print(f"spread (max - min) / mean: {spread:.2%}; same seed, same figures: {same}")
    summary = {"preset": args.preset, "losses": dict(zip(map(str, args.seeds), losses)),
               "mean": mean, "spread": spread, "same_seed_identical": same,
               "runs": {label: {k: r[k] for k in ("train_seconds", "dtype")}
                        for label, r in results.items()},
               "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
