"""`make book` executes only the chapters whose executed copy is not current (tinylm/book_build.py),
and renders the executed copies: these tests decide "current" on executed copies made here."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tinylm import book_build as book, pipeline
from tinylm.config import load_preset
from tinylm.pipeline import CHAPTERS, sources_digest


@pytest.fixture
def chapters(tmp_path, monkeypatch) -> Path:
    """A copy of the chapters' folder, which the book and the pipeline then read."""
    copy = tmp_path / "book"
    shutil.copytree(pipeline.BOOK_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(pipeline, "BOOK_DIR", copy)
    monkeypatch.setattr(book, "BOOK_DIR", copy)
    return copy


def executed(run_dir: Path, name: str, config: dict | None = None, stamp: bool = True,
             output: str = "") -> Path:
    """An executed copy of chapter ``name`` as the pipeline writes it: the injected cell after
    the parameters, the injected values in papermill's metadata, the sources' stamp."""
    nb = nbformat.read(pipeline.BOOK_DIR / f"{name}.ipynb", as_version=4)
    parameters = {"run_dir": str(run_dir.resolve()), "config": config or load_preset("quick").to_dict(),
                  "resume": True}
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells.insert(first + 1, nbformat.v4.new_code_cell(
        f"run_dir = {parameters['run_dir']!r}", metadata={"tags": ["injected-parameters"]}))
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    last.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output or f"{name} ran\n")]
    nb.metadata["papermill"] = {"parameters": parameters}
    if stamp:
        nb.metadata["tinylm"] = {"sources": sources_digest(pipeline.BOOK_DIR / f"{name}.ipynb")}
    path = run_dir / "notebooks" / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_only_the_chapters_not_executed_as_they_are_now_are_stale(chapters, tmp_path):
    run = tmp_path / "run"
    assert book.stale_chapters(run) == CHAPTERS  # nothing executed yet
    for name in CHAPTERS:
        executed(run, name)
    assert book.stale_chapters(run) == []
    executed(run, "03_model", stamp=False)  # a chapter that failed is never stamped
    executed(run, "07_evaluation", config=load_preset("quick", epochs=4).to_dict())
    assert book.stale_chapters(run) == ["03_model", "07_evaluation"]
    assert book.stale_chapters(tmp_path / "elsewhere") == CHAPTERS  # executed for another folder


def test_an_edited_chapter_is_stale_and_an_edited_helper_makes_every_chapter_stale(chapters, tmp_path):
    run = tmp_path / "run"
    for name in CHAPTERS:
        executed(run, name)
    nb = nbformat.read(chapters / "09_hyperparameters.ipynb", as_version=4)
    nb.cells[-1].source += "\n"
    nbformat.write(nb, chapters / "09_hyperparameters.ipynb")
    assert book.stale_chapters(run) == ["09_hyperparameters"]
    with (chapters / "diagrams.py").open("a") as f:  # shared by the chapters, like the library
        f.write("\n# edited\n")
    assert book.stale_chapters(run) == CHAPTERS


def test_the_book_renders_the_executed_chapters_strictly_without_the_injected_cell(chapters, tmp_path):
    run, src = tmp_path / "run", tmp_path / "src"
    for name in CHAPTERS:
        executed(run, name, output=f"output of the executed {name}\n")
    book.stage(run, src)
    jb = Path(sys.executable).with_name("jupyter-book")
    out = subprocess.run([str(jb), "build", "-W", "-n", "--keep-going", "--path-output", str(tmp_path),
                          str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    page = (tmp_path / "_build" / "html" / "book" / "05_training.html").read_text()
    html = re.sub(r"<[^>]+>", "", page)  # the text, without the highlighter's spans
    assert "output of the executed 05_training" in html  # the stored output, not executed again
    assert str(run.resolve()) not in html  # papermill's injected cell is not on the page
    assert "run_dir = None" in html  # the reader's parameters cell is


def test_a_chapter_that_fails_fails_the_build_and_nothing_is_rendered(chapters, tmp_path, monkeypatch):
    """The pipeline's exit code (a failing cell: the chapter's error) is the build's."""
    commands = []

    def pipeline_fails(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 4)

    monkeypatch.setattr(book.subprocess, "run", pipeline_fails)
    for name in CHAPTERS:
        if name != "06_optimization":
            executed(tmp_path / "run", name)
    code = book.main(["--run-dir", str(tmp_path / "run"), "--source-dir", str(tmp_path / "src")])
    assert code == 4 and not (tmp_path / "src").exists()
    assert commands[0][-2:] == ["--chapters", "06"]  # only the stale chapter was asked for
