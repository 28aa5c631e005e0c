"""Wall time and quality of finished runs, from their training_metrics.json.

    python benchmarks/throughput/wall_time.py runs/default
    python benchmarks/throughput/wall_time.py runs/default runs/default-fp32   # compare with the first
    python benchmarks/throughput/wall_time.py runs/default runs/default-fp32 --json benchmarks/throughput/wall_time_fp32_vs_bf16.json

A run made by ``tinylm pipeline`` also reports the whole command's seconds (its pipeline.json).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def figures(run: Path) -> dict:
    m = json.loads((run / "training_metrics.json").read_text())
    final = m["history"][-1]
    pipeline = run / "pipeline.json"  # a run made by `tinylm pipeline` keeps the command's time
    return {"run": str(run), "status": m["status"], "epochs": len(m["history"]),
            "pipeline_seconds": (json.loads(pipeline.read_text())["command_seconds"]
                                 if pipeline.is_file() else None),
            "dtype": m["environment"]["dtype"], "threads": m["environment"]["threads"],
            "train_seconds": m["timing"]["train_seconds"],
            "tokens_per_second": m["timing"]["tokens_per_second"],
            "val_loss": final["val_loss"], "val_bpb": final["val_bpb"],
            "gap": final["val_loss"] - final["train_loss"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="*", default=[Path("runs/default")])
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args()
    rows = [figures(run) for run in a.runs]
    for r in rows:
        line = (f"{r['run']}: {r['status']}, {r['epochs']} epochs, {r['dtype']}, {r['threads']} "
                f"threads, train {r['train_seconds']:.0f} s ({r['tokens_per_second']:.0f} tok/s), "
                f"val loss {r['val_loss']:.4f}, bpb {r['val_bpb']:.4f}, gap {r['gap']:+.3f}")
        if r["pipeline_seconds"] is not None:
            line += f", pipeline {r['pipeline_seconds']:.0f} s"
        if r is not rows[0]:
            r["val_bpb_vs_first"] = r["val_bpb"] / rows[0]["val_bpb"] - 1
            line += f", bpb {100 * r['val_bpb_vs_first']:+.2f}% vs {rows[0]['run']}"
        print(line)
    if a.json:
        a.json.write_text(json.dumps({"runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
