"""Evaluation figures worked out by hand on streams whose per-token losses are known."""
import math

import numpy as np
import pytest
import torch

from tinylm.data import TokenDataset
from tinylm.errors import ValidationError
from tinylm.evaluate import evaluate, raise_if_checks_failed, training_checks


class KnownLoss(torch.nn.Module):
    """A stand-in model whose loss is 1 nat on targets below ``cut`` and 3 nats from it on."""

    def __init__(self, cut: int) -> None:
        super().__init__()
        self.cut = cut

    def forward(self, x, y, reduction="mean"):
        return None, torch.where(y < self.cut, 1.0, 3.0).reshape(-1)


def test_bits_per_byte_is_total_nats_over_total_bytes():
    # stream 0..100, windows of 10: targets are positions 1..100 and equal their position
    ds = TokenDataset(np.arange(101, dtype=np.uint16), block_size=10)
    spans = [[0, 50, "en"], [50, 101, "es"]]
    tpb = {"en": 0.25, "es": 0.5}  # 4 bytes per English token, 2 per Spanish one
    out = evaluate(KnownLoss(cut=50), ds, spans, ["en", "es"], tpb, batch_size=3)
    en, es = out["by_lang"]["en"], out["by_lang"]["es"]
    assert (en["tokens"], es["tokens"]) == (49, 51)  # positions 1..49 and 50..100
    assert en["bpb"] == pytest.approx(1.0 * 0.25 / math.log(2))
    assert es["bpb"] == pytest.approx(3.0 * 0.5 / math.log(2))
    nats = 49 * 1.0 + 51 * 3.0
    nbytes = 49 / 0.25 + 51 / 0.5  # 196 + 102
    assert out["loss"] == pytest.approx(nats / 100)
    assert out["bpb"] == pytest.approx(nats / nbytes / math.log(2))  # 0.978, not 1.100


def epoch(train: float, val: float) -> dict:
    return {"train_loss": train, "val_loss": val}


def test_failed_training_checks_or_samples_stop_with_exit_5():
    good = training_checks({"history": [epoch(4.0, 4.1), epoch(3.0, 3.2)]})
    samples = {"passed": True}
    raise_if_checks_failed(good, samples)  # nothing failed
    overfit = training_checks({"history": [epoch(4.0, 4.1), epoch(2.0, 3.0)]})
    assert [c["passed"] for c in overfit["checks"]] == [True, False, True]
    with pytest.raises(ValidationError, match=r"training checks failed: validation - training loss = 1\.000"):
        raise_if_checks_failed(overfit, samples)
    with pytest.raises(ValidationError, match="see runs/x/samples.json") as err:
        raise_if_checks_failed(good, {"passed": False}, "runs/x/samples.json")
    assert err.value.exit_code == 5 and "--repetition-penalty" in err.value.remedy
