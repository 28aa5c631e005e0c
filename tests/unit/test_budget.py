"""Serving budgets: the measurement in a fresh process and the check against the limits."""
import os

import pytest
import torch

from tinylm.budget import (check_budgets, measure_inference, raise_if_budget_failed,
                           saved_activation_bytes)
from tinylm.checkpoint import save_checkpoint
from tinylm.errors import ValidationError
from tinylm.model import GPT, GPTConfig


def test_inference_is_measured_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=260, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
    save_checkpoint(tmp_path / "final.pt", {"model_config": cfg.to_dict(), "model": GPT(cfg).state_dict()})
    m = measure_inference(tmp_path / "final.pt", prompt_tokens=4, new_tokens=8, requests=7, warmup=1)
    assert m["pid"] != os.getpid() and m["peak_rss_mb"] > 0
    assert m["device"] == "cpu" and m["peak_gpu_mb"] is None  # the default: served from the CPU
    assert m["request"] == {"batch": 1, "prompt_tokens": 4, "new_tokens": 8} and m["requests"] == 7
    assert 0 < m["p50_ms"] <= m["p95_ms"] <= m["p99_ms"]
    assert m["ms_per_token"] == pytest.approx(m["p50_ms"] / 8)


def test_an_exceeded_budget_stops_with_exit_5_naming_it_and_its_remedy():
    measured = {"peak_rss_mb": 180.0, "p95_ms": 12.0}
    raise_if_budget_failed(check_budgets(measured, rss_mb=200, p95_ms=20))  # within both
    report = check_budgets(measured, rss_mb=100, p95_ms=20)
    assert report["passed"] is False and [c["passed"] for c in report["checks"]] == [False, True]
    with pytest.raises(ValidationError) as err:
        raise_if_budget_failed(report)
    assert err.value.message == "budget exceeded: peak RSS 180.0 MB > 100"
    assert "smaller vocab_size" in err.value.remedy and "latency" not in err.value.message
    assert err.value.exit_code == 5


def test_saved_activations_are_those_of_the_training_step_not_of_the_whole_logits():
    """A training step on a CPU computes its loss chunk by chunk and never keeps the batch's
    logits; the measurement must follow the same path, or it charges B x T x V logits that
    training never holds."""
    B, T, C = 8, 64, 32
    saved = {}
    for V in (256, 2048):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=1, n_head=2, n_embd=C, dropout=0.0))
        x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
        saved[V] = saved_activation_bytes(model, x, y, torch.device("cpu"), torch.float32)
    grown = saved[2048] - saved[256]
    # what the chunked loss keeps grows with V by one fp32 gradient of the V x C head: not by
    # B x T fp32 logits per token of the vocabulary (8 times as much here)
    assert 0 < grown <= (2048 - 256) * C * 4 * 1.1
