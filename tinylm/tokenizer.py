"""Byte-level BPE: text to token ids and back, for every string, in every language.

The tokenizer starts from the 256 byte values, so any Unicode text can be encoded (no
unknown token) and decoding gives back exactly the string that was encoded. Training
learns merges of frequent byte pairs from ``train.txt`` only (validation text stays unseen).
The special tokens come first and have fixed ids: ``<|endoftext|>`` is 0 and each language
tag follows in ``languages`` order (``<|en|>`` 1, ``<|es|>`` 2, ...).

``encode_corpus`` turns each document into ``[tag] + ids(text) + [<|endoftext|>]`` and
writes the concatenation as little-endian uint16 (``tokens/train.bin``, ``val.bin``) with a
``meta.json`` describing it: counts, tokens per byte and the token span of each language.

>>> tok = load_tokenizer(Path("runs/default/tokenizer"))        # doctest: +SKIP
>>> tok.decode(tok.encode("¿Qué tal? 🙂").ids)                  # doctest: +SKIP
'¿Qué tal? 🙂'
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tinylm.config import MAX_VOCAB
from tinylm.corpus import EOT, SPLITS, lang_tag, read_documents
from tinylm.errors import TokenizerError
from tinylm.files import atomic_write_bytes, atomic_write_text, write_json

ENCODE_CHUNK = 256  # documents per encode_batch call: all cores busy, bounded memory


def train_tokenizer(corpus_dir: Path, vocab_size: int, languages: list[str], out_dir: Path,
                    progress: bool = True) -> Tokenizer:
    """Learn a ``vocab_size`` byte-level BPE from ``corpus_dir/train.txt``; save ``tokenizer.json``.

    The same corpus and settings always give the same tokenizer. On a small corpus the
    vocabulary can end up smaller than asked for (there are no more pairs to merge);
    ``tok.get_vocab_size()`` is the real size.

    The training runs in a child process (``_train_in_child``), which hands its result back
    in a file: ``tokenizers`` trains in Rust, where Python sees no signal until it returns,
    so in this process Ctrl-C would wait for the end of the training (minutes on a large
    corpus). The child dies with a Ctrl-C at once, and is killed when this process is
    interrupted any other way; nothing of it is kept.
    """
    _check_vocab(vocab_size)
    start = time.perf_counter()
    corpus = Path(corpus_dir) / "train.txt"
    n_docs = len(read_documents(corpus))  # a damaged corpus is refused here, as a CorpusError
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = out_dir / f".tokenizer.json.{os.urandom(4).hex()}.tmp"  # as files.py names them
    command = [sys.executable, "-m", "tinylm.tokenizer", str(corpus), str(vocab_size),
               ",".join(languages), str(result)]
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        try:
            _, err = child.communicate()
        except BaseException:  # Ctrl-C, SIGTERM: stop the training now, not when it ends
            child.kill()
            child.wait()
            raise
        if child.returncode != 0:
            last = (err.strip().splitlines() or [f"exit code {child.returncode}"])[-1]
            raise TokenizerError(f"training the tokenizer failed: {last}",
                                 "check free memory and the corpus, then run the same command "
                                 "again.")
        text = result.read_text(encoding="utf-8")
    finally:
        result.unlink(missing_ok=True)
    atomic_write_text(out_dir / "tokenizer.json", text)
    tok = _text_only(Tokenizer.from_str(text))
    if progress:
        print(f"tokenizer: {tok.get_vocab_size():,} tokens learned from {n_docs:,} documents "
              f"in {time.perf_counter() - start:.1f} s")
    return tok


def _train_in_child(corpus: str, vocab_size: str, languages: str, result: str) -> None:
    """The training itself, in the child process ``train_tokenizer`` starts: BPE merges of
    ``corpus``'s documents, the special tokens first, written to the file ``result``."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it at once, even inside Rust
    docs = read_documents(Path(corpus))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        special_tokens=[EOT, *(lang_tag(lang) for lang in languages.split(","))],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((text for _, text in docs), trainer=trainer, length=len(docs))
    Path(result).write_text(tok.to_str(), encoding="utf-8")


def load_tokenizer(path: Path) -> Tokenizer:
    """Load ``tokenizer.json`` (give the file or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(f"no tokenizer at {path}",
                             "train it first (the tokenizer stage of `tinylm pipeline`) "
                             "or check the path.")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for bad JSON
        raise TokenizerError(f"tokenizer file {path} is corrupt: {exc}",
                             "delete it and train the tokenizer again.") from None
    if tok.token_to_id(EOT) != 0:
        raise TokenizerError(f"{path} is not a tinylm tokenizer ({EOT} is not token 0)",
                             "train the tokenizer with tinylm (the tokenizer stage of "
                             "`tinylm pipeline`).")
    return _text_only(tok)


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """The special tokens and their ids: ``{"<|endoftext|>": 0, "<|en|>": 1, "<|es|>": 2}``."""
    return {t.content: i for i, t in sorted(tok.get_added_tokens_decoder().items()) if t.special}


def lang_id(tok: Tokenizer, lang: str) -> int:
    """The id of ``lang``'s tag token, the first token of every document in that language."""
    tid = tok.token_to_id(lang_tag(lang))
    if tid is None:
        known = ", ".join(t for t in special_ids(tok) if t != EOT)
        raise TokenizerError(f"the tokenizer has no {lang_tag(lang)} token (it knows {known})",
                             f"train the tokenizer again with {lang} in --languages.")
    return tid


def encode_corpus(tok: Tokenizer, corpus_dir: Path, out_dir: Path, progress: bool = True) -> dict:
    """Encode ``train.txt``/``val.txt`` to ``train.bin``/``val.bin``; write and return ``meta.json``.

    ``meta["spans"][split]`` lists ``[start, end, lang]`` token ranges (end exclusive), one
    per run of same-language documents, so per-language loss can be measured on the
    stream. ``meta["splits"][split][lang]`` has ``tokens`` (tags and end markers included),
    ``bytes`` of text and ``tokens_per_byte``, which turns nats per token into bits per byte.

    Documents are encoded ``ENCODE_CHUNK`` at a time, each chunk spread over every core by
    the tokenizers library. A tokenizers ``Encoding`` keeps offsets and strings for every
    token, far larger than the token id itself, so a large corpus encoded at once would
    hold all of them; in chunks, without offsets, only one chunk's are alive.
    """
    _check_vocab(tok.get_vocab_size())
    start = time.perf_counter()
    eot = tok.token_to_id(EOT)
    meta: dict = {"vocab_size": tok.get_vocab_size(), "dtype": "uint16",
                  "special_ids": special_ids(tok), "tokens": {}, "splits": {}, "spans": {}}
    for split in SPLITS:
        docs = read_documents(Path(corpus_dir) / f"{split}.txt")
        tags = {lang: lang_id(tok, lang) for lang, _ in docs}
        pieces, spans, per_lang, pos = [], [], {}, 0
        for (lang, text), ids in zip(docs, _encoded(tok, [text for _, text in docs])):
            ids = [tags[lang], *ids, eot]
            pieces.append(np.asarray(ids, dtype="<u2"))
            if spans and spans[-1][2] == lang:
                spans[-1][1] = pos + len(ids)
            else:
                spans.append([pos, pos + len(ids), lang])
            pos += len(ids)
            counts = per_lang.setdefault(lang, {"tokens": 0, "bytes": 0, "documents": 0})
            counts["tokens"] += len(ids)
            counts["bytes"] += len(text.encode("utf-8"))
            counts["documents"] += 1
        for counts in per_lang.values():
            counts["tokens_per_byte"] = counts["tokens"] / max(counts["bytes"], 1)
        tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype="<u2")
        atomic_write_bytes(Path(out_dir) / f"{split}.bin", tokens.tobytes())
        meta["tokens"][split] = int(len(tokens))
        meta["splits"][split] = per_lang
        meta["spans"][split] = spans
    write_json(Path(out_dir) / "meta.json", meta)
    if progress:
        print(f"tokens: train {meta['tokens']['train']:,}, val {meta['tokens']['val']:,} "
              f"in {time.perf_counter() - start:.1f} s")
    return meta


def _encoded(tok: Tokenizer, texts: list[str]) -> Iterator[list[int]]:
    """The token ids of each text, encoded in parallel ``ENCODE_CHUNK`` texts at a time."""
    # encode_batch_fast (newer tokenizers) skips the offsets, which nothing here reads
    encode_batch = getattr(tok, "encode_batch_fast", tok.encode_batch)
    for i in range(0, len(texts), ENCODE_CHUNK):
        for enc in encode_batch(texts[i:i + ENCODE_CHUNK], add_special_tokens=False):
            yield enc.ids


def _text_only(tok: Tokenizer) -> Tokenizer:
    """Encode text that spells a special token (``"<|en|>"``) as ordinary bytes.

    Special ids are placed by code (``lang_id``, ``encode_corpus``), never by text, so no
    input can forge a document boundary, and every string decodes back to itself. The
    setting is not saved in ``tokenizer.json``, so both ways of getting a tokenizer set it.
    """
    tok.encode_special_tokens = True
    return tok


def _check_vocab(vocab_size: int) -> None:
    if vocab_size > MAX_VOCAB:
        raise TokenizerError(f"vocab_size={vocab_size:,} does not fit the uint16 token files "
                             f"(at most {MAX_VOCAB:,})",
                             f"use a vocab_size of at most {MAX_VOCAB:,}; 4096 to 8192 suits the "
                             "default corpus.")


if __name__ == "__main__":  # the child process of train_tokenizer
    _train_in_child(*sys.argv[1:])
