"""Which settings give the best validation bits per byte in a fixed time on this CPU?

A wall-clock budget on the CPU is a number of optimizer steps: the budget times the
candidate's training tokens per second, measured here, divided by the tokens of a step.
So the sweep runs in two parts, which may run on two machines:

1. ``rates`` (on the CPU that matters): measure each candidate's tokens/s, write them down;
2. ``train`` (anywhere; a GPU is fastest): train each candidate for the steps its budget buys
   on that CPU, with the whole schedule (warmup, cosine) squeezed into them, several at once,
   and evaluate it on the validation split.

The step counts, not the machine, decide what each candidate learns, so the bits per byte
are those the CPU would reach (up to the two machines' rounding). Candidates differ from
the default preset by a few settings; vocabularies other than the default's get their own
run directory (corpus, tokenizer, token files) under ``--runs``, built by ``prepare``.

    python benchmarks/quality/budget_sweep.py prepare
    python benchmarks/quality/budget_sweep.py rates --json benchmarks/quality/budget_sweep_rates.json
    python benchmarks/quality/budget_sweep.py train --rates benchmarks/quality/budget_sweep_rates.json \\
        --budgets 260 330 --device cuda --workers 8 --json benchmarks/quality/budget_sweep.json
"""
from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

CANDIDATES: dict[str, dict] = {
    "default": {},
    "dropout0.1": {"dropout": 0.1},
    "dropout0": {"dropout": 0.0},
    "d0-lr6e-3": {"dropout": 0.0, "learning_rate": 6e-3},
    "d0-lr1e-2": {"dropout": 0.0, "learning_rate": 1e-2},
    "d0-warmup30": {"dropout": 0.0, "warmup_steps": 30},
    "d0-batch16": {"dropout": 0.0, "batch_size": 16, "warmup_steps": 200},
    "d0-batch64-lr6e-3": {"dropout": 0.0, "batch_size": 64, "learning_rate": 6e-3,
                          "warmup_steps": 50},
    "d0-L2": {"dropout": 0.0, "n_layer": 2},
    "d0-L4": {"dropout": 0.0, "n_layer": 4},
    "d0-d96": {"dropout": 0.0, "n_embd": 96, "n_head": 3},
    "d0-d192": {"dropout": 0.0, "n_embd": 192, "n_head": 6},
    "d0-block64": {"dropout": 0.0, "block_size": 64, "batch_size": 64},
    "d0-block256": {"dropout": 0.0, "block_size": 256, "batch_size": 16},
    "d0-vocab2048": {"dropout": 0.0, "vocab_size": 2048},
    "d0-vocab8192": {"dropout": 0.0, "vocab_size": 8192},
    # without dropout the candidates above overfit within ten epochs: more text instead
    "c3M-d0": {"bytes_per_language": 3_000_000, "dropout": 0.0},
    "c3M-d0.1": {"bytes_per_language": 3_000_000, "dropout": 0.1},
    "c4M-d0": {"bytes_per_language": 4_000_000, "dropout": 0.0},
    "c4M-d0.1": {"bytes_per_language": 4_000_000, "dropout": 0.1},
    "c4M-d0-lr6e-3": {"bytes_per_language": 4_000_000, "dropout": 0.0, "learning_rate": 6e-3},
    "c4M-d0-vocab8192": {"bytes_per_language": 4_000_000, "dropout": 0.0, "vocab_size": 8192},
    "c4M-d0-L4": {"bytes_per_language": 4_000_000, "dropout": 0.0, "n_layer": 4},
    "c4M-d0-L4-vocab8192": {"bytes_per_language": 4_000_000, "dropout": 0.0, "n_layer": 4,
                            "vocab_size": 8192},
    "c4M-d0-d192": {"bytes_per_language": 4_000_000, "dropout": 0.0, "n_embd": 192, "n_head": 6},
    "c4M-d0-batch16": {"bytes_per_language": 4_000_000, "dropout": 0.0, "batch_size": 16,
                       "warmup_steps": 200},
    "c4M-d0-block64": {"bytes_per_language": 4_000_000, "dropout": 0.0, "block_size": 64,
                       "batch_size": 64},
    "c4M-d0-L2": {"bytes_per_language": 4_000_000, "dropout": 0.0, "n_layer": 2},
}


def config(name: str):
    from tinylm.config import load_preset

    return load_preset("default", **CANDIDATES[name])


def run_dir(runs: Path, cfg) -> Path:
    return runs / f"bytes{cfg.bytes_per_language}-vocab{cfg.vocab_size}"


def prepare(runs: Path, names: list[str]) -> None:
    """Corpus, tokenizer and token files for every corpus size and vocabulary among them."""
    from tinylm.stages import Run

    for size, vocab in sorted({(config(n).bytes_per_language, config(n).vocab_size) for n in names}):
        cfg = config("default").replace(bytes_per_language=size, vocab_size=vocab)
        Run(run_dir(runs, cfg), cfg, progress=False, resume=False).tokens()
        print(run_dir(runs, cfg), flush=True)


def rates(names: list[str], seconds: float) -> dict[str, float]:
    """Training tokens per second of each candidate on this machine, as `tinylm train` runs."""
    from tinylm.estimate import measure_tokens_per_second
    from tinylm.runtime import setup_process

    setup_process(config("default").threads)
    out = {}
    for name in names:
        out[name] = round(measure_tokens_per_second(config(name), seconds), 1)
        print(f"{name:>20} {out[name]:9,.0f} tokens/s", flush=True)
    return out


def train_one(name: str, steps: int, tokens_dir: str, device: str) -> dict:
    """One candidate for ``steps`` steps, in a worker process; its validation figures."""
    import time

    import torch

    from tinylm.train import Trainer

    torch.set_num_threads(1)
    cfg = config(name).replace(device=device)
    trainer = Trainer(cfg, Path(tokens_dir), progress=False)
    t0 = time.perf_counter()
    losses = trainer.run_steps(steps)["loss"]
    seconds = time.perf_counter() - t0
    val = trainer.evaluate()
    return {"steps": steps, "epochs": round(steps / trainer.sampler.batches_per_epoch, 2),
            "final_train_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
            "val_loss": round(val["loss"], 4), "val_bpb": round(val["bpb"], 4),
            "device_seconds": round(seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["prepare", "rates", "train"])
    p.add_argument("--only", nargs="*", default=list(CANDIDATES), help="candidate names")
    p.add_argument("--runs", type=Path, default=Path("runs/budget-sweep"))
    p.add_argument("--seconds", type=float, default=5.0, help="rates: measurement per candidate")
    p.add_argument("--rates", type=Path, help="train: the rates part's JSON")
    p.add_argument("--budgets", type=float, nargs="+", default=[260.0], help="CPU seconds")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    if a.part == "prepare":
        return prepare(a.runs, a.only)
    if a.part == "rates":
        out = json.loads(a.json.read_text()) if a.json and a.json.is_file() else {}
        out["tokens_per_second"] = {**out.get("tokens_per_second", {}), **rates(a.only, a.seconds)}
    else:
        measured = json.loads(a.rates.read_text())["tokens_per_second"]
        jobs = []
        for budget in a.budgets:
            for name in a.only:
                cfg = config(name)
                steps = int(budget * measured[name] / (cfg.batch_size * cfg.block_size))
                tokens = run_dir(a.runs, cfg) / "tokens"
                jobs.append(({"name": name, "budget_s": budget, **CANDIDATES[name]},
                             (name, steps, str(tokens), a.device)))
        done = {(r["name"], r["budget_s"]) for r, _ in jobs}
        rows = [r for r in (json.loads(a.json.read_text())["rows"] if a.json and a.json.is_file()
                            else []) if (r["name"], r["budget_s"]) not in done]  # kept
        with ProcessPoolExecutor(a.workers, mp_context=get_context("spawn")) as pool:
            futures = [(row, pool.submit(train_one, *args)) for row, args in jobs]
            for row, future in futures:
                rows.append({**row, **future.result()})
                print(json.dumps(rows[-1]), flush=True)
                if a.json:  # as it goes: a sweep cut short keeps what it finished
                    a.json.write_text(json.dumps({"rates": str(a.rates), "device": a.device,
                                                  "rows": rows}, indent=2) + "\n")
        print(f"\n{'candidate':>20} {'budget s':>8} {'steps':>6} {'epochs':>6} {'val bpb':>8} {'gap':>6}")
        for r in sorted(rows, key=lambda r: (r["budget_s"], r["val_bpb"])):
            print(f"{r['name']:>20} {r['budget_s']:8.0f} {r['steps']:6} {r['epochs']:6.2f} "
                  f"{r['val_bpb']:8.4f} {r['val_loss'] - r['final_train_loss']:6.3f}")
        return
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
