"""Hostile text: whatever bytes your corpus files or a run's corpus files hold, reading them
ends in documents or in ``CorpusError`` (exit 2), never another exception or a hang; and no
text can forge a document boundary, so every document written is read back as it was."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinylm.config import Config
from tinylm.corpus import EOT, SPLITS, build_corpus, read_documents
from tinylm.errors import CorpusError

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: Text that looks like the corpus format, line ends of every kind, controls and marks.
HOSTILE = ["<|endoftext|>", "<|en|>", "<|es|>", "<|", "|>", "\n", "\r", "\r\n", "\n\n", "\t",
           "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\ufeff", "\u00ad", "\u0338",
           "e\u0301", "🙂", "\U0010ffff", " ", "word", "palabra"]
hostile_text = st.lists(st.sampled_from(HOSTILE) | st.text(max_size=20), max_size=400).map("".join)


@st.composite
def file_bytes(draw) -> bytes:
    """The bytes of a corpus file: hostile text, with damage of one kind or another."""
    text = draw(hostile_text).encode("utf-8")
    kind = draw(st.sampled_from(["text", "truncated", "random", "invalid utf-8", "nul",
                                 "huge line", "bom"]))
    if kind == "truncated":
        return text[:draw(st.integers(0, len(text)))]  # may cut a character in half
    if kind == "random":
        return draw(st.binary(max_size=2000))
    if kind == "invalid utf-8":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88"])) + text[at:]
    if kind == "nul":
        at = draw(st.integers(0, len(text)))
        return text[:at] + b"\0" + text[at:]
    if kind == "huge line":
        return text + b"x" * draw(st.integers(10_000, 300_000)) + text
    if kind == "bom":
        return b"\xef\xbb\xbf" + text
    return text


@FUZZ
@given(en=file_bytes(), es=file_bytes())
def test_any_corpus_files_give_documents_or_a_corpus_error(en, es):
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "text", Path(tmp) / "corpus"
        folder.mkdir()
        (folder / "book.en.txt").write_bytes(en)
        (folder / "book.es.txt").write_bytes(es)
        cfg = Config(corpus_path=str(folder), languages=["en", "es"])
        try:
            stats = build_corpus(cfg, out, progress=False)
        except CorpusError as err:
            assert err.exit_code == 2 and err.remedy
            assert not out.exists() or not any(out.iterdir())  # refused before writing
            return
        for split in SPLITS:  # every document written is read back, none merged or forged
            docs = read_documents(out / f"{split}.txt")
            assert [lang for lang, _ in docs] == [lang for lang in cfg.languages
                                                  for _ in range(stats.splits[split][lang]["documents"])]
            assert all(text and EOT not in text for _, text in docs)
            assert sum(len(t.encode()) for _, t in docs) == sum(
                s["bytes"] for s in stats.splits[split].values())


@FUZZ
@given(data=file_bytes())
def test_a_damaged_corpus_file_of_a_run_is_a_corpus_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        path.write_bytes(data)
        try:
            docs = read_documents(path)
        except CorpusError as err:
            assert err.exit_code == 2 and str(path) in err.message and err.remedy
            return
        assert all(isinstance(lang, str) and isinstance(text, str) for lang, text in docs)


@pytest.mark.parametrize("damage", [b"\xff\xfe", b"<|en|>caf\xe9<|endoftext|>\n", b"\0"])
def test_a_run_corpus_file_that_is_not_utf8_says_what_to_do(tmp_path, damage):
    path = tmp_path / "train.txt"
    path.write_bytes(b"<|en|>good<|endoftext|>\n" + damage)
    with pytest.raises(CorpusError, match="is not a tinylm corpus file") as err:
        read_documents(path)
    assert "build it again" in err.value.remedy
