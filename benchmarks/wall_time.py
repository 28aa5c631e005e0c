"""Wall time and quality of a finished run, from its training_metrics.json.

    python benchmarks/wall_time.py runs/default
    python benchmarks/wall_time.py runs/default runs/default-fp32   # compare two runs
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    runs = [Path(p) for p in sys.argv[1:]] or [Path("runs/default")]
    base = None
    for run in runs:
        m = json.loads((run / "training_metrics.json").read_text())
        h = m["history"]
        final = h[-1]
        line = (f"{run}: {m['status']}, {len(h)} epochs, {m['environment']['dtype']}, "
                f"{m['environment']['threads']} threads, train {m['timing']['train_seconds']:.0f} s "
                f"({m['timing']['tokens_per_second']:.0f} tok/s), val loss {final['val_loss']:.4f}, "
                f"bpb {final['val_bpb']:.4f}, gap {final['val_loss'] - final['train_loss']:+.3f}")
        if base is None:
            base = final["val_loss"]
        else:
            line += f", val loss {100 * (final['val_loss'] / base - 1):+.2f}% vs {runs[0]}"
        print(line)


if __name__ == "__main__":
    main()
