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


def test_a_run_stopped_in_its_first_epoch_has_checks_that_say_nothing_was_measured():
    checks = training_checks({"status": "interrupted", "history": []})
    assert [c["name"] for c in checks["checks"]] == [
        "final validation loss", "validation - training loss", "training loss falls every epoch"]
    assert all(c["value"] is None and not c["passed"] for c in checks["checks"])
    assert not checks["passed"] and "no epoch has finished" in checks["note"]
    with pytest.raises(ValidationError, match="final validation loss: not measured: no epoch "
                                              "has finished yet") as err:
        raise_if_checks_failed(checks, {"passed": True})
    assert err.value.exit_code == 5


def test_samples_in_a_language_without_common_words_are_judged_on_repetition_alone(tmp_path):
    from tinylm.config import Config
    from tinylm.evaluate import STOPWORDS, sample_report
    from tinylm.model import GPT, GPTConfig
    from tinylm.tokenizer import train_tokenizer

    assert "pt" not in STOPWORDS
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("".join(f"<|{lang}|>{text} {i}<|endoftext|>\n"
                                              for i in range(20) for lang, text in
                                              [("en", "and the lord said"), ("pt", "e disse o senhor")]))
    tok = train_tokenizer(corpus, 300, ["en", "pt"], tmp_path / "tokenizer", progress=False)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=16,
                          dropout=0.0)).eval()
    cfg = Config(languages=["en", "pt"], corpus_path="text", sample_new_tokens=8,
                 max_repeated_4grams=1.0)
    report = sample_report(model, tok, cfg, per_language=2)
    assert report["language_not_measured"] == ["pt"]
    pt = [s for s in report["samples"] if s["lang"] == "pt"]
    en = [s for s in report["samples"] if s["lang"] == "en"]
    assert [(s["language_check"], s["detected_lang"], s["passed"]) for s in pt] == [
        ("not measured", None, True)] * 2
    assert all(s["language_check"] == "measured" for s in en)
    assert all(s["passed"] == (s["detected_lang"] == "en") for s in en)  # still checked
