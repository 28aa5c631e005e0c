"""Corpora larger than memory: token files are mapped, not read, and encoding in bounded
chunks gives exactly the token files that encoding everything at once gives."""
import json

import numpy as np
import pytest

import tinylm.tokenizer
from tinylm.config import Config
from tinylm.corpus import build_corpus
from tinylm.data import TokenDataset, load_splits
from tinylm.tokenizer import encode_corpus, lang_id, train_tokenizer

FIVE = ["en", "es", "fr", "de", "it"]


def test_token_files_are_memory_mapped_and_give_the_same_batches(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 60_000, 1001).astype("<u2")
    for split in ("train", "val"):
        tokens.tofile(tmp_path / f"{split}.bin")
    spans = [[0, 1001, "en"]]
    (tmp_path / "meta.json").write_text(json.dumps({
        "vocab_size": 60_000, "special_ids": {"<|endoftext|>": 0, "<|en|>": 1},
        "spans": {"train": spans, "val": spans}}))
    train, val, _ = load_splits(tmp_path, block_size=10)
    assert isinstance(train.tokens, np.memmap) and isinstance(val.tokens, np.memmap)
    loaded = TokenDataset.from_file(tmp_path / "train.bin", 10, in_memory=True)
    assert not isinstance(loaded.tokens, np.memmap)
    idx = np.array([99, 0, 42])  # the last window too
    (x, y), (x_mem, y_mem) = train.batch(idx), loaded.batch(idx)
    assert y.equal(y_mem) and x[:, 1:].equal(x_mem[:, 1:])
    assert (x[:, 0] == 1).all()  # each window opens with its language tag
    assert y[0, -1].item() == tokens[1000]


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    run = tmp_path_factory.mktemp("five")
    cfg = Config(languages=FIVE, bytes_per_language=10_000, vocab_size=512)
    build_corpus(cfg, run / "corpus", progress=False)
    return run, train_tokenizer(run / "corpus", cfg.vocab_size, FIVE, run / "tokenizer", progress=False)


def test_encoding_in_chunks_gives_the_token_files_of_encoding_at_once(five, monkeypatch):
    run, tok = five
    monkeypatch.setattr(tinylm.tokenizer, "ENCODE_CHUNK", 10**9)
    whole = encode_corpus(tok, run / "corpus", run / "whole", progress=False)
    monkeypatch.setattr(tinylm.tokenizer, "ENCODE_CHUNK", 3)  # chunks end inside languages
    chunked = encode_corpus(tok, run / "corpus", run / "chunked", progress=False)
    assert chunked == whole
    for split in ("train", "val"):
        assert (run / "chunked" / f"{split}.bin").read_bytes() == (run / "whole" / f"{split}.bin").read_bytes()
        assert [lang for _, _, lang in whole["spans"][split]] == FIVE
        stream = np.fromfile(run / "whole" / f"{split}.bin", dtype="<u2")
        for start, end, lang in whole["spans"][split]:
            assert stream[start] == lang_id(tok, lang) and stream[end - 1] == 0  # tag ... <|endoftext|>
