"""Which model shape and vocabulary give the best validation bits per byte for the time?

Trains each candidate on the default corpus with the default schedule for ``--epochs``
epochs (each in its own run directory, reusing the corpus) and prints wall time, tokens/s
and final validation loss and bits per byte (bpb is comparable across vocabularies).

    python benchmarks/quality/shape_sweep.py --epochs 5 --json benchmarks/quality/shape_sweep.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

CANDIDATES = [
    {"vocab_size": 4096, "n_layer": 4, "n_embd": 128, "n_head": 4},
    {"vocab_size": 2048, "n_layer": 4, "n_embd": 128, "n_head": 4},
    {"vocab_size": 8192, "n_layer": 4, "n_embd": 128, "n_head": 4},
    {"vocab_size": 4096, "n_layer": 3, "n_embd": 160, "n_head": 5},
    {"vocab_size": 4096, "n_layer": 6, "n_embd": 96, "n_head": 4},
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--out", default="runs/sweep", help="parent folder of the candidates' runs")
    p.add_argument("--only", type=int, nargs="*", help="indices of CANDIDATES to run")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    from tinylm.config import load_preset
    from tinylm.runtime import setup_process
    from tinylm.stages import Run

    setup_process(load_preset("default").threads)  # as `tinylm train` does

    rows = []
    for i, shape in enumerate(CANDIDATES):
        if a.only and i not in a.only:
            continue
        cfg = load_preset("default", epochs=a.epochs, **shape)
        name = "-".join(f"{k.split('_')[-1]}{v}" for k, v in shape.items())
        run = Run(Path(a.out) / name, cfg, progress=False, resume=False)
        run.tokens()
        t0 = time.perf_counter()
        m = run.train()
        wall = time.perf_counter() - t0
        last = m["history"][-1]
        rows.append({**shape, "epochs": a.epochs, "parameters": m["model"]["parameters"],
                     "wall_s": round(wall, 1), "tokens_per_s": m["timing"]["tokens_per_second"],
                     "train_tokens": m["data"]["train_tokens"], "val_loss": round(last["val_loss"], 4),
                     "val_bpb": round(last["val_bpb"], 4),
                     "gap": round(last["val_loss"] - last["train_loss"], 4)})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'vocab':>6} {'L':>2} {'d':>4} {'params':>9} {'wall s':>7} {'tok/s':>7} {'val bpb':>8}")
    for r in rows:
        print(f"{r['vocab_size']:6} {r['n_layer']:2} {r['n_embd']:4} {r['parameters']:9,} "
              f"{r['wall_s']:7.0f} {r['tokens_per_s']:7.0f} {r['val_bpb']:8.4f}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
