"""Bits per byte of several runs' models on the same held-out text.

Runs with other corpus sizes hold out other chapters, so their validation figures are
measured on other text. This script measures each run's final model on one run's
validation chapters (``--on``), each encoded with the model's own tokenizer, and checks
first that none of those chapters is in the training text of any run measured: a chapter
seen in training would make the figure a training loss.

The embedded corpus shuffles its chapters once per seed and a run takes a prefix of that
order, holding out the first tenth of what it took: a run with less text holds out a subset
of what a run with more text (and the same seed) holds out, so the smaller run's validation
chapters are held out by both.

    python benchmarks/quality/heldout_compare.py runs/default runs/default-small --on runs/default-small \\
        --json benchmarks/quality/heldout_compare.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def measure(run_dir: Path, text_run: Path) -> dict:
    """The final model of ``run_dir`` on the validation text of ``text_run``, in the precision
    the run trained in (its own figure, measured on its own text, comes out the same)."""
    import torch

    from tinylm.config import Config
    from tinylm.data import load_splits
    from tinylm.evaluate import evaluate
    from tinylm.runtime import resolve_dtype
    from tinylm.stages import Run
    from tinylm.tokenizer import encode_corpus

    cfg = Config.load(run_dir / "config.json")
    run = Run(run_dir, cfg, resume=True, progress=False)
    model, tok = run.model(), run.tokenizer()
    metrics = json.loads(run.metrics_path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        encode_corpus(tok, text_run / "corpus", Path(tmp), progress=False)
        _, val, meta = load_splits(Path(tmp), cfg.block_size)  # windows open with their tag
        figures = evaluate(model, val, meta["spans"]["val"], cfg.languages,
                           {lang: v["tokens_per_byte"] for lang, v in meta["splits"]["val"].items()},
                           batch_size=cfg.batch_size, dtype=resolve_dtype(cfg.dtype, torch.device("cpu")))
    return {"run": str(run_dir), "bytes_per_language": cfg.bytes_per_language,
            "n_layer": cfg.n_layer, "epochs": cfg.epochs,
            "train_seconds": metrics["timing"]["train_seconds"],
            "val_bpb_own": metrics["history"][-1]["val_bpb"],
            "val_bpb": round(figures["bpb"], 4),
            "val_bpb_by_lang": {k: round(v["bpb"], 4) for k, v in figures["by_lang"].items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="finished run directories")
    p.add_argument("--on", type=Path, required=True, help="the run whose validation text is used")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    from tinylm.corpus import read_documents

    held_out = {text for _, text in read_documents(a.on / "corpus" / "val.txt")}
    for run_dir in a.runs:
        seen = held_out & {text for _, text in read_documents(run_dir / "corpus" / "train.txt")}
        if seen:
            raise SystemExit(f"{len(seen)} of the {len(held_out)} held-out documents of {a.on} are "
                             f"in the training text of {run_dir}: no fair comparison")
    rows = [measure(run_dir, a.on) for run_dir in a.runs]
    for r in rows:
        print(f"{r['run']}: {r['val_bpb']:.4f} bits per byte on {a.on}'s held-out text "
              f"({r['val_bpb_own']:.4f} on its own), {r['train_seconds']:.0f} s of training")
    if a.json:
        a.json.write_text(json.dumps({"on": str(a.on), "held_out_documents": len(held_out),
                                      "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
