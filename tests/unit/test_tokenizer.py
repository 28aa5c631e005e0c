"""Properties of the tokenizer stage: exact round trips, fixed special ids, consistent token files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models

from tinylm.config import Config
from tinylm.corpus import EOT, build_corpus, lang_tag, read_documents
from tinylm.errors import TokenizerError
from tinylm.tokenizer import (encode_corpus, lang_id, load_tokenizer, special_ids,
                              train_tokenizer)

VOCAB = 512


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A small bilingual corpus, its tokenizer and its token files, built once."""
    root = tmp_path_factory.mktemp("run")
    build_corpus(Config(bytes_per_language=30_000, vocab_size=VOCAB), root / "corpus", progress=False)
    tok = train_tokenizer(root / "corpus", VOCAB, ["en", "es"], root / "tokenizer", progress=False)
    encode_corpus(tok, root / "corpus", root / "tokens", progress=False)
    return root


@pytest.fixture(scope="module")
def tok(run) -> Tokenizer:
    return load_tokenizer(run / "tokenizer")


def test_special_tokens_have_fixed_ids(tok):
    assert special_ids(tok) == {EOT: 0, "<|en|>": 1, "<|es|>": 2}
    assert lang_id(tok, "en") == 1 and lang_id(tok, "es") == 2
    assert tok.get_vocab_size() == VOCAB
    with pytest.raises(TokenizerError) as err:
        lang_id(tok, "fr")
    assert err.value.exit_code == 3 and "--languages" in err.value.remedy


@pytest.mark.parametrize("text", [
    "In the beginning God created the heaven and the earth.",
    "¿Dónde está el niño? ¡Año nuevo, señor! Pingüino, acción, ÉPOCA.",
    "emoji 🙂👩‍👩‍👧 flags 🇪🇸🇬🇧 and CJK 漢字かな 한국어",
    "  leading spaces, tabs\tand\nnew lines\r\n\n  ",
    "text that looks special: <| |> <|fr|> <|endoftext <|en| endoftext|>",
    "<|endoftext|>spelled out, and <|en|> and <|es|> too",
    "",
    "e\u0301 (decomposed) \u00ad soft hyphen \u200b zero width \x00 nul",
])
def test_round_trip_examples(tok, text):
    assert tok.decode(tok.encode(text).ids) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_unicode(tok, text):
    assert tok.decode(tok.encode(text).ids) == text


def test_bpe_compresses_both_languages(run):
    meta = json.loads((run / "tokens" / "meta.json").read_text())
    for split in ("train", "val"):
        for lang in ("en", "es"):
            assert 0.3 < meta["splits"][split][lang]["tokens_per_byte"] < 0.6  # 512 tokens: ~0.45


def test_training_is_deterministic(run, tmp_path):
    train_tokenizer(run / "corpus", VOCAB, ["en", "es"], tmp_path, progress=False)
    first = (run / "tokenizer" / "tokenizer.json").read_bytes()
    assert (tmp_path / "tokenizer.json").read_bytes() == first


def test_validation_text_is_not_trained_on(tmp_path):
    (tmp_path / "train.txt").write_text("".join(f"<|en|>abc abd abe {i}{EOT}\n" for i in range(50)))
    (tmp_path / "val.txt").write_text(f"<|en|>{'xyz ' * 500}{EOT}\n")
    tok = train_tokenizer(tmp_path, 300, ["en"], tmp_path, progress=False)
    learned = [t for t, i in tok.get_vocab().items() if i >= 3 + 256]
    assert learned and not any("x" in t or "z" in t for t in learned)


def test_load_accepts_file_or_folder_and_reports_problems(run, tmp_path):
    path = run / "tokenizer" / "tokenizer.json"
    assert load_tokenizer(path).to_str() == load_tokenizer(path.parent).to_str()
    with pytest.raises(TokenizerError) as err:
        load_tokenizer(tmp_path)
    assert err.value.exit_code == 3 and err.value.remedy
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "trunc')
    with pytest.raises(TokenizerError, match="corrupt") as err:
        load_tokenizer(tmp_path)
    assert err.value.exit_code == 3


def test_token_files_match_meta_and_decode_to_the_corpus(run, tok):
    meta = json.loads((run / "tokens" / "meta.json").read_text())
    assert meta["vocab_size"] == VOCAB and meta["dtype"] == "uint16"
    for split in ("train", "val"):
        path = run / "tokens" / f"{split}.bin"
        ids = np.fromfile(path, dtype="<u2")
        assert path.stat().st_size == 2 * meta["tokens"][split] == 2 * len(ids)
        spans = meta["spans"][split]
        assert [lang for *_, lang in spans] == ["en", "es"]
        assert spans[0][0] == 0 and spans[0][1] == spans[1][0] and spans[-1][1] == len(ids)
        docs = read_documents(run / "corpus" / f"{split}.txt")
        for start, end, lang in spans:
            counts = meta["splits"][split][lang]
            texts = [text for l, text in docs if l == lang]
            assert counts["tokens"] == end - start
            assert counts["bytes"] == sum(len(t.encode()) for t in texts)
            assert counts["tokens_per_byte"] == pytest.approx((end - start) / counts["bytes"])
            # each document is [tag] + ids(text) + [eot]; decoding it gives the text back
            piece = ids[start:end]
            ends = np.flatnonzero(piece == 0)
            starts = np.concatenate([[0], ends[:-1] + 1])
            assert len(ends) == len(texts) and ends[-1] == len(piece) - 1
            assert all(piece[starts] == tok.token_to_id(lang_tag(lang)))
            decoded = [tok.decode(piece[s + 1:e].tolist()) for s, e in zip(starts, ends)]
            assert decoded == texts


def test_vocab_too_large_for_uint16_is_refused(run, tmp_path):
    with pytest.raises(TokenizerError) as err:
        train_tokenizer(run / "corpus", 70_000, ["en", "es"], tmp_path, progress=False)
    assert err.value.exit_code == 3 and "65,535" in err.value.message
    huge = Tokenizer(models.BPE(vocab={f"t{i}": i for i in range(70_000)}, merges=[]))
    with pytest.raises(TokenizerError):
        encode_corpus(huge, run / "corpus", tmp_path, progress=False)
    assert not list(tmp_path.iterdir())
