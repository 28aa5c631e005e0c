"""Each lever of the training recipe on its own and all together, at the default shape and data.

The variants: the former default (AdamW, cosine to a tenth of the peak) and the recipe's
levers one at a time; then today's recipe (Muon at four times the rate) with each change of
the architecture alone (RMSNorm, rotary positions, a SwiGLU feed-forward, QK-norm, no
biases) and all five together (``--variants`` picks some).

For each variant and seed, a fresh model of the default preset's shape trains ``--steps``
optimizer steps with the whole schedule squeezed into them (``Trainer.run_steps``), and is
evaluated on the validation split every ``--eval-every`` steps from ``--eval-from`` on. It
reports the final bits per byte (quality at a fixed budget), the first evaluated step at
which it reached ``--target`` (the former AdamW default's final bits per byte after its 3
epochs), and seconds per step. Each run is a fresh process with ``--threads`` threads,
``--jobs`` of them at a time; the corpus, tokenizer and token files are built once, with the
preset's seed, so a seed here draws the initial weights and the batch order only.

    python benchmarks/quality/recipe_ablation.py --json benchmarks/quality/recipe_ablation.json
    python benchmarks/quality/recipe_ablation.py --variants adamw muon --seeds 1337 --steps 300
    python benchmarks/quality/recipe_ablation.py --laptop --variants "muon, rate x4" \
        "muon, rate x4, rmsnorm" ... --json benchmarks/quality/recipe_ablation_architecture.json

``--laptop`` keeps PyTorch's kernels to AVX2 (``benchmarks/tools/laptop.py``); the runs are in
fp32 either way, so the bits per byte do not depend on it, only the seconds.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "tools"))
import laptop  # noqa: E402

#: The former default (AdamW, cosine to a tenth of the peak), one lever at a time, and all.
VARIANTS = {
    "adamw": {"optimizer": "adamw", "learning_rate": 3e-3, "lr_decay": "cosine",
              "min_lr_ratio": 0.1},
    "adamw, linear to 0": {"optimizer": "adamw", "learning_rate": 3e-3, "lr_decay": "linear",
                           "min_lr_ratio": 0.0},
    "muon": {"optimizer": "muon", "learning_rate": 3e-3, "lr_decay": "cosine",
             "min_lr_ratio": 0.1},
    "muon, rate x4": {"optimizer": "muon", "learning_rate": 1.2e-2, "lr_decay": "cosine",
                      "min_lr_ratio": 0.1},
    "muon, rate x4, linear to 0": {"optimizer": "muon", "learning_rate": 1.2e-2,
                                   "lr_decay": "linear", "min_lr_ratio": 0.0},
}
#: Every variant is GPT-2's architecture unless it names a change: the default's rotary
#: positions are one of the changes measured here.
VARIANTS = {name: {"positions": "learned"} | v for name, v in VARIANTS.items()}
#: The default recipe (Muon at four times the rate) with each change of the architecture
#: that Llama-style models made to GPT-2's, alone and all together.
DEFAULT = VARIANTS["muon, rate x4"]
ARCHITECTURE = {"rmsnorm": {"norm": "rmsnorm"}, "rotary": {"positions": "rotary"},
                "swiglu": {"mlp": "swiglu"}, "qk-norm": {"qk_norm": True},
                "no biases": {"bias": False}}
VARIANTS |= {f"muon, rate x4, {name}": DEFAULT | change for name, change in ARCHITECTURE.items()}
VARIANTS["muon, rate x4, all five"] = DEFAULT | {k: v for change in ARCHITECTURE.values()
                                                 for k, v in change.items()}


def worker(a: argparse.Namespace) -> dict:
    """One variant and seed, in this process: train, evaluate along the way, report."""
    from tinylm.config import load_preset
    from tinylm.runtime import setup_process
    from tinylm.train import Trainer

    cfg = load_preset("default", **VARIANTS[a.worker], seed=a.seed, threads=a.threads,
                      dtype="fp32")
    setup_process(cfg.threads)
    trainer = Trainer(cfg, a.tokens, progress=False)
    evals: dict[int, float] = {}
    due = set(range(a.eval_from, a.steps, a.eval_every)) | {a.steps}

    def evaluate_now(t: Trainer) -> None:
        if t.step in due:
            evals[t.step] = round(t.evaluate()["bpb"], 4)

    out = trainer.run_steps(a.steps, evaluate_now)
    reached = next((s for s, bpb in evals.items() if bpb <= a.target), None)
    return {"variant": a.worker, "seed": a.seed, "settings": VARIANTS[a.worker],
            "steps": a.steps, "val_bpb": evals[a.steps], "val_bpb_at": evals,
            "first_step_at_target": reached,
            "seconds_per_step": round(sum(out["seconds"]) / a.steps, 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--tokens", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", type=int, nargs="+", default=[1337, 1])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--eval-from", type=int, default=500)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--target", type=float, default=1.495)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--laptop", action="store_true", help="AVX2 kernels only")
    p.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "recipe-ablation")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a)))
        return
    from tinylm.config import load_preset
    from tinylm.stages import Run

    run = Run(a.run_dir, load_preset("default"), progress=False, resume=False)
    run.tokens()  # built once (reused when current), shared by every run

    def one(variant: str, seed: int) -> dict:
        cmd = [sys.executable, __file__, "--worker", variant, "--seed", str(seed),
               "--tokens", str(run.tokens_dir), "--steps", str(a.steps),
               "--eval-from", str(a.eval_from), "--eval-every", str(a.eval_every),
               "--target", str(a.target), "--threads", str(a.threads)]
        child = subprocess.run(cmd, env=laptop.env(a.laptop), capture_output=True, text=True,
                               check=True)
        row = json.loads(child.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        return row

    t0 = time.perf_counter()
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(lambda vs: one(*vs), [(v, s) for s in a.seeds for v in a.variants]))
    print(f"\n{'variant':30} {'seed':>5} {'bpb at ' + str(a.steps):>11} {'reached ' + str(a.target):>14}")
    for r in rows:
        at = r["first_step_at_target"]
        print(f"{r['variant']:30} {r['seed']:5} {r['val_bpb']:11.4f} "
              f"{('step ' + str(at)) if at else 'no':>14}")
    if a.json:
        a.json.write_text(json.dumps({
            "steps": a.steps, "target": a.target, "threads": a.threads, "laptop": a.laptop,
            "seeds": a.seeds, "wall_seconds": round(time.perf_counter() - t0),
            "kernels": laptop.check() if a.laptop else None, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
