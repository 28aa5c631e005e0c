"""Bad input: every case exits with its documented code (ARCHITECTURE.md: 1 configuration/
prerequisites, 2 corpus, 3 tokenizer, 4 training), prints what happened and what to do, never a
traceback, touches nothing outside the run directory and leaves existing checkpoints intact.

Most cases run the real ``tinylm`` command in a subprocess against a copy of a finished
run (``--fresh`` where training would start, so that the only thing protecting the old
checkpoints is the order of the checks). The disk and pipeline cases call ``cli.main``
in-process, because they need a patched ``shutil.disk_usage`` or book folder.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
import torch

from tinylm import cli, pipeline
from tinylm.checkpoint import save_checkpoint
from tinylm.config import load_preset
from tinylm.stages import Run
from tinylm.tokenizer import train_tokenizer

CLI = [sys.executable, "-m", "tinylm.cli"]
TINY = dict(bytes_per_language=30_000, vocab_size=512, n_layer=1, n_embd=32, n_head=2,
            block_size=32, batch_size=16, epochs=1, warmup_steps=5, threads=1)
FLAGS = ["--preset", "quick"] + [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def snapshot(folder: Path, skip: str | None = None) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not (skip and p.relative_to(folder).parts[0] == skip)}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run: corpus, tokenizer, tokens, checkpoints, metrics."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    Run(run_dir, load_preset("quick", **TINY), progress=False).train()
    return run_dir


@pytest.fixture
def ws(tmp_path, finished):
    """A workspace: ``work/`` (the current directory, with the input files), ``home/``, and
    ``run/``, a copy of the finished run."""
    for name in ("work", "home"):
        (tmp_path / name).mkdir()
    (tmp_path / "work" / "afile").write_text("a file, not a folder\n")
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path


def tinylm(ws: Path, *args: str, expect: int, says: list[str], remedy: list[str] = (),
           cache_used: bool = False) -> subprocess.CompletedProcess:
    """Run ``tinylm`` in ``ws/work``; check exit code, message, remedy, and that nothing
    outside ``ws/run`` changed and the run's checkpoints and metrics are intact."""
    run = ws / "run"
    outside = snapshot(ws, skip="run")
    kept = snapshot(run / "checkpoints") | {"metrics": ((run / "training_metrics.json").read_bytes(), 0)}
    env = {**os.environ, "HOME": str(ws / "home"), "TINYLM_CACHE": str(ws / "cache")}
    out = subprocess.run([*CLI, *args], cwd=ws / "work", env=env, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=300)
    assert out.returncode == expect, out.stderr[-3000:]
    assert "Traceback" not in out.stderr + out.stdout
    error = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    todo = [line for line in out.stderr.splitlines() if line.startswith("  what to do: ")]
    assert error and todo, out.stderr[-2000:]
    for text in says:
        assert text in error[-1], (text, error[-1])
    for text in remedy:
        assert text in todo[-1], (text, todo[-1])
    if cache_used:  # a failed download leaves the cache folder, but no file in it
        assert [p for p in (ws / "cache").rglob("*") if p.is_file()] == []
        shutil.rmtree(ws / "cache")
    assert snapshot(ws, skip="run") == outside
    assert not (ws / "cache").exists()
    now = snapshot(run / "checkpoints") | {"metrics": ((run / "training_metrics.json").read_bytes(), 0)}
    assert now == kept
    assert not (run / ".lock").exists()
    return out


def train(ws: Path, *args: str, **check) -> subprocess.CompletedProcess:
    return tinylm(ws, "train", *FLAGS, *args, "--output-dir", str(ws / "run"), "--fresh",
                  "--no-eval", **check)


# ------------------------------------------------------------------------ corpus
def test_corpus_path_missing(ws):
    before = snapshot(ws / "run")
    train(ws, "--corpus-path", "missing.en.txt", "--languages", "en", expect=2,
          says=["corpus path missing.en.txt does not exist"], remedy=["check --corpus-path"])
    assert snapshot(ws / "run") == before  # not even config.json was rewritten


@pytest.mark.parametrize("name, data, says, remedy", [
    ("empty.en.txt", b"  \n\n\t\n", ["corpus file empty.en.txt is empty"], ["put some text in it"]),
    ("data.en.txt", b"PK\x03\x04\x00\x00\x08binary", ["corpus file data.en.txt looks binary",
                                                        "NUL byte at offset 4"],
     ["plain UTF-8 text", "pdftotext"]),
    ("notes.en.txt", "Good day to you.\n\nCafé au lait".encode("latin-1"),
     ["corpus file notes.en.txt is not UTF-8 text (byte 0xe9 at offset 21)"],
     ["iconv -f latin1 -t utf-8", "notes.utf8.en.txt"]),
])
def test_unusable_corpus_files(ws, name, data, says, remedy):
    (ws / "work" / name).write_bytes(data)
    before = snapshot(ws / "run")
    train(ws, "--corpus-path", name, "--languages", "en", expect=2, says=says, remedy=remedy)
    assert snapshot(ws / "run") == before


@pytest.mark.parametrize("name, says, remedy", [
    ("notes.fr.txt", ["corpus file notes.fr.txt is in fr (its name says so), which is not in "
                      "languages=en,es"], ["--languages en,es,fr"]),
    ("notes.txt", ["cannot tell the language of corpus file notes.txt"],
     ["notes.en.txt", "--corpus-language en"]),
])
def test_corpus_file_whose_language_is_unknown(ws, name, says, remedy):
    (ws / "work" / name).write_text("\n\n".join(f"paragraph {i} " + "word " * 50 for i in range(20)))
    train(ws, "--corpus-path", name, expect=2, says=says, remedy=remedy)


def test_corpus_smaller_than_one_training_window(ws):
    # two documents (paragraphs of 3000 characters) that BPE squeezes into ~500 tokens each
    (ws / "work" / "tiny.en.txt").write_text(("lorem ipsum " * 250 + "\n\n") * 2)
    train(ws, "--corpus-path", "tiny.en.txt", "--languages", "en", "--block-size", "1024", expect=2,
          says=["the training split has", "tokens, fewer than one window of block_size+1=1025"],
          remedy=["a larger corpus or a smaller --block-size"])


# ------------------------------------------------------------------------- config
@pytest.mark.parametrize("flag, value, says, remedy", [
    ("--vocab-size", "100", ["vocab_size=100 is out of range [260, 65535]"], ["stored as uint16"]),
    ("--vocab-size", "70000", ["vocab_size=70000 is out of range [260, 65535]"], ["stored as uint16"]),
    ("--epochs", "0", ["epochs=0.0 is out of range [0.01, 1000]"], ["set epochs between 0.01 and 1000"]),
    ("--epochs", "three", ["epochs='three' is not a number"],
     ["give epochs as a number: default 1.0; range 0.01..1000"]),
    ("--batch-size", "three", ["batch_size='three' is not a whole number"],
     ["give batch_size as a whole number: default 32; range 1..4096"]),
    ("--batch-size", "0", ["batch_size=0 is out of range [1, 4096]"], ["set batch_size between"]),
    ("--block-size", "4096", ["block_size=4096 is out of range [8, 2048]"], ["context length"]),
    ("--learning-rate", "5", ["learning_rate=5.0 is out of range [1e-06, 1.0]"], ["peak learning rate"]),
    ("--preset", "fastest", ["unknown preset 'fastest'"], ["quick, default, high_quality, low_memory"]),
    ("--epocs", "3", ["unrecognized arguments: --epocs 3"], ["did you mean --epochs?"]),
    ("--corpus-url", "http://example.invalid/book.en.txt",
     ["corpus_sha256='' is not a 64-character hex digest"], ["sha256sum FILE"]),
])
def test_configuration_out_of_range(ws, flag, value, says, remedy):
    before = snapshot(ws / "run")
    train(ws, flag, value, expect=1, says=says, remedy=remedy)
    assert snapshot(ws / "run") == before


@pytest.mark.parametrize("target, says", [
    ("afile/run", ["output directory afile/run cannot be created: afile is a file, not a folder"]),
    ("afile", ["output directory afile is a file, not a folder"]),
])
def test_output_directory_that_cannot_be_written(ws, target, says):
    tinylm(ws, "train", *FLAGS, "--output-dir", target, "--no-eval", expect=1, says=says,
           remedy=["choose another --output-dir"])
    assert (ws / "work" / "afile").read_text() == "a file, not a folder\n"


# ----------------------------------------------------------------------- download
BODY = ("\n\n".join(f"downloaded paragraph {i} " + "text " * 60 for i in range(40)) + "\n").encode()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = BODY * 100 if "big" in self.path else BODY  # big: ~1.3 MB
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_with_the_wrong_checksum_caches_nothing(ws, server):
    wrong = "0" * 64
    train(ws, "--corpus-url", f"{server}/book.en.txt", "--corpus-sha256", wrong, "--languages", "en",
          expect=2, says=[f"has sha256 {hashlib.sha256(BODY).hexdigest()}, expected {wrong}",
                          "nothing was cached"],
          remedy=["check --corpus-sha256"], cache_used=True)


def test_download_over_the_size_limit_caches_nothing(ws, server):
    sha = hashlib.sha256(BODY * 100).hexdigest()
    train(ws, "--corpus-url", f"{server}/big.en.txt", "--corpus-sha256", sha, "--languages", "en",
          "--max-download-mb", "1", expect=2, says=["is larger than max_download_mb=1"],
          remedy=["raise --max-download-mb"], cache_used=True)


# ---------------------------------------------------------------------- generate
def generate(ws: Path, *args: str, **check) -> subprocess.CompletedProcess:
    return tinylm(ws, "generate", "--output-dir", str(ws / "run"), "--sample-new-tokens", "5", *args,
                  **check)


def test_generate_works_on_the_fixture(ws):
    out = subprocess.run([*CLI, "generate", "--output-dir", str(ws / "run"), "--prompt", "And the",
                          "--sample-new-tokens", "5"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("And the"), out.stderr[-2000:]


def test_evaluating_an_unfinished_run_is_refused_not_trained(ws):
    """A run stopped mid-training (no final.pt) is not silently trained to the end."""
    run = ws / "run"
    (run / "checkpoints" / "final.pt").unlink()
    (run / "checkpoints" / "final.pt.sha256").unlink()
    before = snapshot(run)
    tinylm(ws, "evaluate", "--output-dir", str(run), expect=4,
           says=["has no final model: it has not finished training"],
           remedy=["finish it first (tinylm train --preset quick", "--resume)"])
    assert snapshot(run) == before


def test_prompt_longer_than_the_model_context(ws):
    generate(ws, "--prompt", "In the beginning God created the heaven and the earth. " * 8,
             expect=1, says=["tokens long with its language tag, but this model reads at most 32 "
                             "tokens (block_size=32)"],
             remedy=["shorten the prompt to fewer than 31 tokens", "larger --block-size"])


def test_sampling_options_are_range_checked(ws):
    generate(ws, "--temperature", "50", expect=1, says=["temperature=50.0 is out of range [0.0, 10.0]"],
             remedy=["set temperature between"])


def test_language_the_tokenizer_does_not_know(ws):
    generate(ws, "--lang", "fr", expect=3, says=["the tokenizer has no <|fr|> token"],
             remedy=["--languages"])


def test_tokenizer_that_does_not_belong_to_the_checkpoint(ws, tmp_path):
    train_tokenizer(ws / "run" / "corpus", 300, ["en", "es"], tmp_path / "other", progress=False)
    shutil.copy(tmp_path / "other" / "tokenizer.json", ws / "run" / "tokenizer" / "tokenizer.json")
    shutil.rmtree(tmp_path / "other")
    generate(ws, expect=3, says=["tokenizer.json is not the tokenizer that final.pt was trained with"],
             remedy=["restore the run's own tokenizer.json", "tinylm train --fresh"])


def _rewrite_final(ws: Path, **extra) -> Path:
    final = ws / "run" / "checkpoints" / "final.pt"
    state = torch.load(final, weights_only=True)
    save_checkpoint(final, {**state, **extra})  # with a matching checksum
    return final


def test_checkpoint_from_a_newer_tinylm(ws):
    _rewrite_final(ws, format=99, tinylm_version="9.0.0")
    generate(ws, expect=4, says=["final.pt was written by tinylm 9.0.0 (format 99), newer than this "
                                 "tinylm 0.1.0 (format 1)"], remedy=["upgrade tinylm"])


def test_truncated_checkpoint(ws):
    final = ws / "run" / "checkpoints" / "final.pt"
    final.write_bytes(final.read_bytes()[:5000])
    generate(ws, expect=4, says=[f"checkpoint {final} is corrupt or truncated", "it was not used"],
             remedy=["best.pt", "--checkpoint best"])


class _Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoint_holding_a_pickled_object(ws):
    marker = ws / "run" / "code-ran"
    _rewrite_final(ws, extra=_Payload(str(marker)))
    generate(ws, expect=4, says=["holds pickled Python objects (io.open)", "weights_only=True"],
             remedy=["checkpoints written by tinylm only"])
    assert not marker.exists()


# ------------------------------------------------------------ in-process: disk, book
def _in_process(ws: Path, monkeypatch, capsys, argv: list[str], expect: int, says: str,
                remedy: str) -> str:
    monkeypatch.chdir(ws / "work")
    outside = snapshot(ws, skip="run")
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == expect and "Traceback" not in err, err[-2000:]
    assert f"error: {says}" in err and remedy in err.split("what to do:")[1]
    assert snapshot(ws, skip="run") == outside
    return err


def _no_disk(monkeypatch, free: int = 0) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=free))


def test_not_enough_disk_for_the_corpus(ws, monkeypatch, capsys):
    _no_disk(monkeypatch)
    run = ws / "new-run"
    _in_process(ws, monkeypatch, capsys, ["train", *FLAGS, "--output-dir", str(run), "--no-eval"],
                expect=1, says="not enough free disk for the corpus: 0.0 MB free",
                remedy="free some space or choose another --output-dir")
    assert sorted(p.name for p in run.iterdir()) == []  # checked before the stage started


def test_not_enough_disk_for_the_checkpoints(ws, monkeypatch, capsys):
    _no_disk(monkeypatch)
    before = snapshot(ws / "run")
    _in_process(ws, monkeypatch, capsys,
                ["train", *FLAGS, "--epochs", "2", "--output-dir", str(ws / "run"), "--resume",
                 "--no-eval", "--quiet"],
                expect=1, says="not enough free disk for the checkpoints",
                remedy="nothing was changed")
    assert snapshot(ws / "run") == before


def _book(folder: Path, parameters: str | None) -> None:
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells.append(nbformat.v4.new_code_cell("print('chapter ran')"))
    nbformat.write(nb, folder / "01_overview.ipynb")


@pytest.mark.parametrize("parameters, says, remedy", [
    ('run_dir = "runs/book"\nconfig = {}', "chapter 01_overview.ipynb has no parameter(s) resume",
     "its parameters cell declares: config, run_dir"),
    (None, "chapter 01_overview.ipynb has no parameter(s) config, resume, run_dir",
     "declares: nothing"),
])
def test_pipeline_chapter_without_a_parameter(ws, monkeypatch, capsys, parameters, says, remedy):
    _book(ws / "book", parameters)
    monkeypatch.setattr(pipeline, "BOOK_DIR", ws / "book")
    run = ws / "work" / "book-run"
    _in_process(ws, monkeypatch, capsys, ["pipeline", *FLAGS, "--output-dir", str(run),
                                          "--chapters", "1", "--quiet"],
                expect=1, says=says, remedy=remedy)
    assert not run.exists()


def test_pipeline_with_a_chapter_missing(ws, monkeypatch, capsys):
    (ws / "book").mkdir()
    monkeypatch.setattr(pipeline, "BOOK_DIR", ws / "book")
    _in_process(ws, monkeypatch, capsys, ["pipeline", *FLAGS, "--output-dir", str(ws / "run"),
                                          "--chapters", "1,5", "--quiet"],
                expect=1, says="chapter notebook(s) 01_overview.ipynb, 05_training.ipynb missing",
                remedy="complete source checkout")
