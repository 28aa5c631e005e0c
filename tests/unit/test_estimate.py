"""The time estimate printed before a run: its arithmetic, and the settings it proposes."""
from __future__ import annotations

import json
import math

import pytest

from tinylm import estimate
from tinylm.config import load_preset


def test_run_seconds_is_work_over_speed():
    cfg = load_preset("quick", epochs=3, block_size=64)
    # 6,401 training tokens -> 100 windows of 64 = 6,400 tokens per epoch; 3 epochs at 1,000
    # tokens/s = 19.2 s; evaluation: 3 x 900 tokens at a third of the cost = 0.9 s
    got = estimate.run_seconds(cfg, 1000.0, 6401, 900)
    assert got == pytest.approx(19.2 + 0.9 + estimate.STAGES_SECONDS)
    assert estimate.run_seconds(cfg, 1000.0, 6401, 900, pipeline=True) == pytest.approx(
        got + estimate.CHAPTERS_SECONDS)
    assert estimate.run_seconds(cfg, 2000.0, 6401, 900) - estimate.STAGES_SECONDS == pytest.approx(
        (got - estimate.STAGES_SECONDS) / 2)  # twice the speed, half the wait


def test_token_counts_come_from_the_token_files_when_there_are_some(tmp_path):
    cfg = load_preset("default", bytes_per_language=1_500_000)
    train, val, exact = estimate.count_tokens(cfg)
    assert not exact and train == int(3_000_000 * 0.9 * 0.27) and val == int(3_000_000 * 0.1 * 0.27)
    (tmp_path / "meta.json").write_text(json.dumps({"tokens": {"train": 1234, "val": 56}}))
    assert estimate.count_tokens(cfg, tmp_path) == (1234, 56, True)


def test_tokens_per_byte_stays_between_bytes_and_a_floor():
    assert estimate.tokens_per_byte(260) <= 1.0
    assert estimate.tokens_per_byte(65_535) == 0.2
    sizes = [512, 1024, 2048, 4096, 8192]
    values = [estimate.tokens_per_byte(v) for v in sizes]
    assert all(b < a for a, b in zip(values, values[1:]))  # a bigger vocabulary, fewer tokens


def test_fitting_epochs_is_the_most_that_fit():
    cfg = load_preset("default", epochs=20)
    est = estimate.Estimate(10_000.0, 700_000, 100_000, True, 0.0)
    n = estimate.fitting_epochs(cfg, est, target=600)
    at = lambda e: estimate.run_seconds(cfg.replace(epochs=e), 10_000.0, 700_000, 100_000)  # noqa: E731
    assert at(n) <= 600 < at(n + 1)


def test_a_long_estimate_comes_with_settings_that_fit():
    cfg = load_preset("default", epochs=20)
    slow = estimate.Estimate(10_000.0, 700_000, 100_000, True,
                             estimate.run_seconds(cfg, 10_000.0, 700_000, 100_000))
    lines = estimate.explain(cfg, slow)
    # 5,468 windows x 128 x 20 / 10,000 = 1,399.8 s, evaluation 66.7 s, stages 15 s: 24.7 minutes
    assert "about 24.7 minutes" in lines[0] and "10,000 tokens/s" in lines[0]
    assert len(lines) == 2 and f"--epochs {estimate.fitting_epochs(cfg, slow)}" in lines[1]
    assert "--preset quick" in lines[1]
    fast = estimate.Estimate(100_000.0, 700_000, 100_000, True,
                             estimate.run_seconds(cfg, 100_000.0, 700_000, 100_000))
    assert len(estimate.explain(cfg, fast)) == 1


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_the_measurement_trains_the_configured_shape(monkeypatch, dtype):
    """Every measured step is a training step of the run's model: its shape, batch, window and
    precision, with the loss the trainer uses, and the optimizer moves the weights."""
    import torch

    from tinylm.model import GPT, GPTConfig

    cfg = load_preset("quick", n_layer=1, n_embd=32, n_head=2, block_size=16, batch_size=4,
                      vocab_size=300, dtype=dtype)
    steps, models = [], []
    real_forward = GPT.forward

    def forward(self, idx, targets=None, **kwargs):
        if not models:
            models.append((self, {n: p.detach().clone() for n, p in self.named_parameters()}))
        steps.append({"config": self.config, "idx": tuple(idx.shape), "targets": targets is not None,
                      "training": self.training, "grad": torch.is_grad_enabled(),
                      "autocast": torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu")
                      else torch.float32, "logits": kwargs.get("return_logits", True)})
        return real_forward(self, idx, targets, **kwargs)

    monkeypatch.setattr(GPT, "forward", forward)
    tps = estimate.measure_tokens_per_second(cfg, seconds=0.2)
    assert math.isfinite(tps) and tps > 0
    assert len(steps) >= 3  # the warmup steps, then measured ones
    assert all(s == {"config": GPTConfig.from_config(cfg), "idx": (4, 16), "targets": True,
                     "training": True, "grad": True, "logits": False,
                     "autocast": torch.bfloat16 if dtype == "bf16" else torch.float32}
               for s in steps), steps[0]
    model, initial = models[0]
    assert all(not torch.equal(p, initial[n]) for n, p in model.named_parameters())  # it stepped


def test_only_a_long_training_is_measured_again(monkeypatch):
    """The longer measurement refines the training's share of the wait: a pipeline that is
    long because of its chapters, with a short training, does not wait for it."""
    asked = []

    def measure(cfg, seconds):  # the default trains for minutes at this speed, quick for seconds
        asked.append(seconds)
        return 20_000.0

    monkeypatch.setattr(estimate, "measure_tokens_per_second", measure)
    quick = load_preset("quick")
    est = estimate.estimate(quick, pipeline=True)
    assert est.seconds > estimate.SHORT_SECONDS and asked == [0.5]  # chapters: long; training: not
    asked.clear()
    estimate.estimate(load_preset("default"), pipeline=True)
    assert asked == [0.5, 3.0]
