"""Properties of the corpus stage: determinism, no leaks, grouping, cleaning, bad input."""
from __future__ import annotations

import hashlib
import threading
import unicodedata
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinylm.config import Config
from tinylm.corpus import (EOT, CorpusStats, build_corpus, clean_text, fetch_url, lang_tag,
                           read_documents)
from tinylm.errors import CorpusError

SMALL = dict(bytes_per_language=30_000, vocab_size=512)
LARGEST_CHAPTER = 13_200  # bytes of Psalm 119 in the King James text, the longest chapter


@pytest.fixture(scope="module")
def bible(tmp_path_factory) -> tuple[Path, CorpusStats]:
    out = tmp_path_factory.mktemp("bible")
    return out, build_corpus(Config(**SMALL), out, progress=False)


# ------------------------------------------------------------------ embedded Bible
def test_documents_are_grouped_by_language_in_config_order(bible):
    out, _ = bible
    for split in ("train", "val"):
        langs = [lang for lang, _ in read_documents(out / f"{split}.txt")]
        n = langs.count("en")
        assert n > 0 and langs == ["en"] * n + ["es"] * n


def test_same_seed_same_files_other_seed_other_chapters(bible, tmp_path):
    out, stats = bible
    again = build_corpus(Config(**SMALL), tmp_path / "again", progress=False)
    for name in ("train.txt", "val.txt", "stats.json"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert again == stats
    other = build_corpus(Config(**SMALL, seed=7), tmp_path / "other", progress=False)
    assert other.keys["train"] != stats.keys["train"]


def test_no_validation_chapter_is_trained_on(bible):
    out, stats = bible
    train_keys, val_keys = set(stats.keys["train"]), set(stats.keys["val"])
    assert val_keys and not train_keys & val_keys
    train_texts = {text for _, text in read_documents(out / "train.txt")}
    assert not train_texts & {text for _, text in read_documents(out / "val.txt")}


def test_both_languages_get_the_same_chapters(bible):
    _, stats = bible
    for split in ("train", "val"):
        keys = stats.keys[split]
        half = len(keys) // 2
        assert keys[:half] == keys[half:]  # en chapters, then the same es chapters


def test_size_is_near_the_target_and_val_share_is_right(bible):
    _, stats = bible
    target = SMALL["bytes_per_language"]
    per_lang = [sum(stats.splits[s][lang]["bytes"] for s in ("train", "val")) for lang in ("en", "es")]
    assert target <= sum(per_lang) / 2 < target + LARGEST_CHAPTER
    chapters = len(set(stats.keys["train"])) + len(set(stats.keys["val"]))
    assert len(set(stats.keys["val"])) == max(1, round(0.1 * chapters))


def test_stats_count_the_files_and_survive_save_load(bible, tmp_path):
    out, stats = bible
    for split in ("train", "val"):
        docs = read_documents(out / f"{split}.txt")
        for lang in ("en", "es"):
            texts = [text for l, text in docs if l == lang]
            assert stats.splits[split][lang] == {
                "bytes": sum(len(t.encode()) for t in texts), "characters": sum(map(len, texts)),
                "lines": sum(t.count("\n") + 1 for t in texts), "documents": len(texts)}
    assert CorpusStats.load(out / "stats.json") == stats
    assert "train  es" in stats.table() and "bible.db" in stats.source


def test_file_format_and_clean_documents(bible):
    out, _ = bible
    raw = (out / "train.txt").read_text()
    assert raw.startswith(lang_tag("en")) and raw.endswith(EOT + "\n")
    for _, text in read_documents(out / "train.txt"):
        assert text == clean_text(text) and "\u00ad" not in text and "\t" not in text


def test_reina_valera_soft_hyphen_is_gone(tmp_path):
    cfg = Config(bytes_per_language=4_500_000, languages=["es"])  # the whole Spanish text
    build_corpus(cfg, tmp_path, progress=False)
    text = (tmp_path / "train.txt").read_text() + (tmp_path / "val.txt").read_text()
    assert "Cuán terrible es este lugar!" in text and "\u00ad" not in text and "\t" not in text


# ------------------------------------------------------------------------ cleaning
def test_clean_text_examples():
    assert clean_text("a\u00adb\tc  \r\n\r\n\r\n\nd  ") == "ab c\n\nd"
    assert clean_text("  \n\nCafe\u0301\n") == "Café"
    assert clean_text("x<|endoftext|>y<|en|>") == "x< |endoftext|>y< |en|>"
    assert clean_text(" indented\n  kept") == "indented\n  kept"


_TRICKY = st.text(alphabet=st.sampled_from(
    ["\u00ad", "\t", " ", "\n", "\r", "e", "\u0301", "<", "|", "\u3000", "\u2028", "\x85",
     "\u1100", "\u1161", "\u11a8", "\u226e", "\u0338", "a"]))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), _TRICKY))
def test_clean_text_is_idempotent_nfc_and_free_of_soft_hyphens_and_tabs(text):
    once = clean_text(text)
    assert clean_text(once) == once
    assert "\u00ad" not in once and "\t" not in once and "<|" not in once
    assert unicodedata.is_normalized("NFC", once)
    assert once == once.strip() and "\n\n\n" not in once


# -------------------------------------------------------------------- your own text
def _paragraphs(word: str, n: int) -> str:
    return "\n\n".join(f"{word} {i} " + "lorem ipsum " * 40 for i in range(n)) + "\n"


def test_folder_corpus_languages_from_names(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.en.txt").write_text(_paragraphs("hello", 40))
    (src / "b.es.txt").write_text(_paragraphs("¡hola!", 30))
    (src / "notes.md").write_text("ignored")
    cfg = Config(corpus_path=str(src), val_fraction=0.1)
    stats = build_corpus(cfg, tmp_path / "out", progress=False)
    docs = read_documents(tmp_path / "out" / "train.txt") + read_documents(tmp_path / "out" / "val.txt")
    assert {lang for lang, _ in docs} == {"en", "es"}
    assert all(len(text) <= 4000 for _, text in docs)
    for lang in ("en", "es"):
        assert stats.splits["val"][lang]["documents"] >= 1
        assert stats.splits["train"][lang]["documents"] > stats.splits["val"][lang]["documents"]
    assert not set(stats.keys["train"]) & set(stats.keys["val"])
    again = build_corpus(cfg, tmp_path / "again", progress=False)
    assert again == stats
    assert (tmp_path / "again" / "val.txt").read_bytes() == (tmp_path / "out" / "val.txt").read_bytes()


def test_single_file_with_corpus_language(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text(_paragraphs("once", 20))
    stats = build_corpus(Config(corpus_path=str(path), corpus_language="en", languages=["en"]),
                         tmp_path / "out", progress=False)
    assert stats.languages == ["en"] and stats.splits["val"]["en"]["documents"] == 1


def _bad(tmp_path: Path, case: str) -> Config:
    """A configuration that must fail with a CorpusError, one per kind of bad input."""
    f = tmp_path / "notes.en.txt"
    text = _paragraphs("hi", 3)
    if case == "missing":
        return Config(corpus_path=str(tmp_path / "nope"), languages=["en"])
    if case == "empty folder":
        (tmp_path / "readme.md").write_text("no text files here")
        return Config(corpus_path=str(tmp_path), languages=["en"])
    if case == "empty file":
        f.write_text("  \n\n")
    elif case == "binary":
        f.write_bytes(b"text\x00\x01\x02")
    elif case == "not utf-8":
        f = tmp_path / "notes.txt"
        f.write_bytes(b"hello world\n\xff caf\xe9")
        return Config(corpus_path=str(f), corpus_language="en", languages=["en"])
    elif case == "no language":
        f = tmp_path / "notes.txt"
        f.write_text(text)
    elif case == "language not configured":
        f = tmp_path / "notes.fr.txt"
        f.write_text(text)
    elif case == "language missing":
        f.write_text(text)
        return Config(corpus_path=str(f))  # languages en,es but only English text
    elif case == "one document":
        f.write_text("one short paragraph")
    return Config(corpus_path=str(f), languages=["en"])


BAD = {
    "missing": "does not exist", "empty folder": "no .txt files", "empty file": "is empty",
    "binary": "NUL byte at offset 4", "not utf-8": "(byte 0xff at offset 12)",
    "no language": "cannot tell the language", "language not configured": "is in fr",
    "language missing": "no text in es", "one document": "single document",
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_a_corpus_error_with_a_remedy(tmp_path, case):
    cfg = _bad(tmp_path, case)
    with pytest.raises(CorpusError) as err:
        build_corpus(cfg, tmp_path / "out", progress=False)
    assert err.value.exit_code == 2 and BAD[case] in err.value.message and err.value.remedy
    assert not (tmp_path / "out").exists()


def test_remedies_say_what_to_run(tmp_path):
    with pytest.raises(CorpusError) as err:
        build_corpus(_bad(tmp_path, "not utf-8"), tmp_path / "out", progress=False)
    assert "iconv -f latin1 -t utf-8" in err.value.remedy and "notes.utf8.txt" in err.value.remedy
    with pytest.raises(CorpusError) as err:
        build_corpus(_bad(tmp_path, "no language"), tmp_path / "out", progress=False)
    assert "notes.en.txt" in err.value.remedy and "--corpus-language" in err.value.remedy
    with pytest.raises(CorpusError) as err:
        read_documents(tmp_path / "nothing.txt")
    assert err.value.exit_code == 2


# ------------------------------------------------------------------------ download
BODY = _paragraphs("downloaded", 12).encode()
SHA = hashlib.sha256(BODY).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        if not self.path.startswith("/nolength"):
            self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY[:-50] if self.path.startswith("/truncated") else BODY)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_is_cached_and_reused_offline(server, tmp_path):
    httpd, base = server
    path = fetch_url(f"{base}/book.en.txt", SHA, tmp_path)
    assert path.read_bytes() == BODY and [p.name for p in tmp_path.iterdir()] == [SHA]
    httpd.shutdown()
    httpd.server_close()
    assert fetch_url(f"{base}/book.en.txt", SHA.upper(), tmp_path) == path


def test_damaged_cache_file_is_fetched_again(server, tmp_path):
    _, base = server
    (tmp_path / SHA).write_bytes(b"truncated")
    assert fetch_url(f"{base}/book.en.txt", SHA, tmp_path).read_bytes() == BODY


@pytest.mark.parametrize("url, sha, max_bytes, words", [
    ("/book.en.txt", "0" * 64, 10**6, [SHA, "0" * 64]),
    ("/book.en.txt", SHA, 100, ["max_download_mb"]),
    ("/nolength/book.en.txt", SHA, 100, ["max_download_mb"]),
    ("/truncated/book.en.txt", SHA, 10**6, ["cannot download", f"after {len(BODY) - 50:,} of"]),
    ("http://127.0.0.1:9/closed.txt", SHA, 10**6, ["cannot download"]),
])
def test_download_failures_leave_nothing_in_the_cache(server, tmp_path, url, sha, max_bytes, words):
    _, base = server
    with pytest.raises(CorpusError) as err:
        fetch_url(url if url.startswith("http") else base + url, sha, tmp_path, max_bytes)
    assert err.value.exit_code == 2 and err.value.remedy
    assert all(w in err.value.message for w in words)
    assert list(tmp_path.iterdir()) == []


def test_build_corpus_from_url_takes_language_from_url(server, tmp_path, monkeypatch):
    _, base = server
    monkeypatch.setenv("TINYLM_CACHE", str(tmp_path / "cache"))
    cfg = Config(corpus_url=f"{base}/book.en.txt", corpus_sha256=SHA, languages=["en"])
    stats = build_corpus(cfg, tmp_path / "out", progress=False)
    assert stats.splits["train"]["en"]["documents"] >= 1 and SHA in stats.source
    assert (tmp_path / "cache" / SHA).is_file()


def test_the_printers_capitals_at_chapter_openings_are_undone():
    """Reina-Valera opens half its chapters with a word in capitals ("EN el principio"); a
    model trained on that opens documents with invented capital words. Only words that are
    capitals by nature stay (KJV's LORD), and nothing but letter case changes."""
    import re

    from tinylm import corpus

    texts = corpus._read_bible(["en", "es"])
    for lang, keep in (("en", {"LORD", "GOD", "TEKEL"}), ("es", {"JEHOVA", "JAH", "TEKEL", "JUZGAME"})):
        openings = [re.match(r"\W*([^\W\d_]+)", line) for chapter in texts[lang].values()
                    for line in chapter.split("\n")]
        shouted = {m[1] for m in openings if m and len(m[1]) > 1 and m[1].isupper()}
        assert shouted <= keep, (lang, shouted - keep)
    assert texts["es"][(1, 1)].startswith("En el principio crió Dios")
    assert texts["es"][(1, 2)].startswith("Y fueron acabados")
    assert sum(chapter.count("the LORD") for chapter in texts["en"].values()) > 5000


def test_a_digest_that_is_not_hex_never_becomes_a_path(tmp_path):
    """A "digest" of "./" steps and "../victim.txt" once deleted the file it named."""
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep me")
    cache = tmp_path / "cache"
    cache.mkdir()
    for sha in ("./" * 25 + "/../victim.txt", "../" * 21 + "x", "z" * 64):
        with pytest.raises(CorpusError, match="not a 64-character hex digest"):
            fetch_url("http://127.0.0.1:9/book.en.txt", sha, cache)
    assert victim.read_bytes() == b"keep me" and list(cache.iterdir()) == []
