"""A whole training state as ``Trainer.state_dict`` makes it, of a tiny model, for the tests
that damage one part of it and for those that need a resumable checkpoint without training."""
from __future__ import annotations

import json

import torch

from tinylm.config import Config
from tinylm.model import GPT, GPTConfig

TINY_MODEL = GPTConfig(vocab_size=260, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.0)


def training_state(step: int = 1) -> dict:
    torch.manual_seed(0)
    model = GPT(TINY_MODEL)
    cfg = Config(vocab_size=260, block_size=8, n_layer=1, n_head=2, n_embd=16)
    return {"model": model.state_dict(), "optimizer": torch.optim.AdamW(model.parameters()).state_dict(),
            "model_config": TINY_MODEL.to_dict(), "config": json.dumps(cfg.to_dict()), "step": step,
            "sampler": {"epoch": 0, "batch": step}, "epoch_loss_sum": 0.0, "epoch_steps": step,
            "history": "[]", "best_val": float("inf"), "elapsed": 0.0, "resumed": "[]",
            "rng_torch": torch.get_rng_state(), "tokenizer_sha256": "", "world_size": 1}
