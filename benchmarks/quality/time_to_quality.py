"""Time to quality: the validation bits per byte a preset reaches in a fixed wall-clock budget.

For each budget, a fresh model of the preset's shape trains for as many optimizer steps as
fit in the budget at this machine's measured speed, with the whole schedule (warmup, cosine
decay) squeezed into those steps, then is evaluated on the validation split. This answers
"what is the best model I can get in N seconds here?", which a fixed number of epochs does not.

    python benchmarks/quality/time_to_quality.py --budgets 60 120 300 --json benchmarks/quality/time_to_quality.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--budgets", type=float, nargs="+", default=[60, 120, 300], help="seconds")
    p.add_argument("--run-dir", type=Path, default=Path("runs/time-to-quality"),
                   help="where the corpus and token files are built (reused when current)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()

    from tinylm.config import load_preset
    from tinylm.runtime import setup_process

    cfg = load_preset(a.preset)
    setup_process(cfg.threads)  # as `tinylm train` does
    from tinylm.estimate import measure_tokens_per_second
    from tinylm.stages import Run
    from tinylm.train import Trainer

    run = Run(a.run_dir, cfg, progress=False, resume=False)
    run.tokens()
    tokens_per_step = cfg.batch_size * cfg.block_size
    rows = []
    for budget in a.budgets:
        steps_per_second = measure_tokens_per_second(cfg, seconds=5.0) / tokens_per_step
        steps = max(1, int(budget * steps_per_second))
        trainer = Trainer(cfg, run.tokens_dir, progress=False)
        t0 = time.perf_counter()
        losses = trainer.run_steps(steps)["loss"]
        train_s = time.perf_counter() - t0
        val = trainer.evaluate()
        rows.append({"budget_s": budget, "steps": steps,
                     "epochs": round(steps / trainer.sampler.batches_per_epoch, 2),
                     "train_s": round(train_s, 1), "final_train_loss": round(losses[-1], 4),
                     "val_loss": round(val["loss"], 4), "val_bpb": round(val["bpb"], 4)})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'budget s':>9} {'steps':>6} {'epochs':>7} {'trained s':>10} {'val bpb':>8}")
    for r in rows:
        print(f"{r['budget_s']:9.0f} {r['steps']:6} {r['epochs']:7.2f} {r['train_s']:10.1f} "
              f"{r['val_bpb']:8.4f}")
    if a.json:
        a.json.write_text(json.dumps({"preset": a.preset, "config": cfg.to_dict(), "rows": rows},
                                     indent=2) + "\n")


if __name__ == "__main__":
    main()
