"""Where a training step's time goes: ``torch.profiler`` over the trainer's own step.

The default preset's shape (or ``--preset``), random tokens, after a few warm-up steps;
prints the operators that take the most time and groups them into what a reader can act on
(matrix products, the cross-entropy over the logits, autocast's dtype copies, dropout's
random masks, the optimizer, the rest).

    python benchmarks/throughput/step_profile.py
    python benchmarks/throughput/step_profile.py --steps 10 --json benchmarks/throughput/step_profile.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

#: Operator -> the part of the step it belongs to (the rest is "other").
GROUPS = {
    "matrix products": ("aten::mm", "aten::bmm", "aten::addmm"),
    # the trainer's chunked loss: log-softmax and exp_ (its gradient); the plain loss: the rest
    "cross-entropy (log-softmax and its gradient)": ("aten::_log_softmax", "aten::exp_",
                                                     "aten::_log_softmax_backward_data",
                                                     "aten::nll_loss_forward", "aten::nll_loss_backward"),
    "dtype copies (autocast)": ("aten::copy_",),
    "dropout masks": ("aten::bernoulli_",),
    "optimizer (fused AdamW)": ("aten::_fused_adamw_",),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile
    from train_throughput import random_token_files  # beside this script

    from tinylm.config import load_preset
    from tinylm.runtime import setup_process
    from tinylm.train import Trainer

    cfg = load_preset(a.preset, languages=["en"])
    setup_process(cfg.threads)  # as `tinylm train` does
    tmp = random_token_files(cfg.vocab_size, 200_000)
    trainer = Trainer(cfg, tmp, progress=False)
    batch = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.block_size + 1),
                          generator=torch.Generator().manual_seed(0))
    for _ in range(a.warmup):
        trainer.train_step(batch[:, :-1], batch[:, 1:], cfg.learning_rate)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            trainer.train_step(batch[:, :-1], batch[:, 1:], cfg.learning_rate)
    ops = {e.key: e.self_cpu_time_total / 1e3 / a.steps for e in prof.key_averages()}  # ms per step
    total = sum(ops.values())
    shares = {group: sum(ops.get(op, 0.0) for op in names) / total for group, names in GROUPS.items()}
    shares["other"] = 1 - sum(shares.values())
    print(f"{cfg.name} preset, {a.steps} steps: {total:.1f} ms per step (operators' own time)")
    for group, share in shares.items():
        print(f"  {group:48} {100 * share:5.1f}%")
    print("\nlongest operators (ms per step):")
    for op, ms in sorted(ops.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {op:48} {ms:7.2f}")
    if a.json:
        a.json.write_text(json.dumps({"preset": cfg.name, "steps": a.steps, "threads": torch.get_num_threads(),
                                      "ms_per_step": total, "shares": shares,
                                      "top_ops_ms": dict(sorted(ops.items(), key=lambda kv: -kv[1])[:12])},
                                     indent=2) + "\n")


if __name__ == "__main__":
    main()
