"""The chapters as files: what the pipeline, papermill and the book build rely on.

Executing the chapters is the pipeline test's job (tests/integration/test_pipeline.py runs
all ten, with papermill, in a run directory of its own); these tests check the
contract that execution does not: chapters are committed clean (no outputs, no execution
counts), each declares the parameters the pipeline injects, and the table of contents lists
the same chapters (ten and an appendix), in the same order, as ``tinylm.pipeline.CHAPTERS``.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from tinylm.pipeline import BOOK_DIR, CHAPTERS, PARAMETERS

ROOT = BOOK_DIR.parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
#: A reader's defaults: the book's own run for the quick preset (one folder per configuration).
PARAMETER_DEFAULTS = {"run_dir": None, "config": {}, "resume": False}


def _read(name: str) -> nbformat.NotebookNode:
    path = BOOK_DIR / f"{name}.ipynb"
    assert path.is_file(), f"chapter {path.relative_to(ROOT)} is missing"
    return nbformat.read(path, as_version=4)


def _code_cells(nb: nbformat.NotebookNode) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_book_holds_exactly_the_ten_chapters_and_the_appendix():
    found = sorted(p.stem for p in BOOK_DIR.glob("*.ipynb"))
    assert found == sorted(CHAPTERS), "every notebook in book/ is a chapter, and every chapter exists"
    assert len(CHAPTERS) == 11 and CHAPTERS[-1] == "11_scaling_out"


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_is_committed_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, (f"{name}: code cells {dirty} have outputs or execution counts; clear them "
                       "(Jupyter: Edit > Clear Outputs of All Cells) before committing")
    assert "papermill" not in nb.metadata, f"{name} is an executed copy (papermill metadata)"
    assert nb.metadata.get("kernelspec") == KERNELSPEC


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_declares_the_pipeline_parameters(name):
    nb = _read(name)
    first = _code_cells(nb)[0]
    assert "parameters" in first.metadata.get("tags", []), \
        f"{name}: the first code cell must be tagged 'parameters' (papermill injects after it)"
    values = {}
    exec(compile(first.source, f"{name}:parameters", "exec"), {}, values)  # plain assignments only
    assert values == PARAMETER_DEFAULTS, f"{name}: parameters are {values}"
    assert set(values) == set(PARAMETERS)
    assert all(isinstance(node, ast.Assign) for node in ast.parse(first.source).body)


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_opens_the_run_with_the_injected_settings(name):
    setup = _code_cells(_read(name))[1].source
    for needle in ("run = chapter_run(run_dir, config, resume)", "cfg = run.cfg"):
        assert needle in setup, f"{name}: the cell after the parameters must say {needle}"


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_has_a_title_and_things_to_try(name):
    nb = _read(name)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), \
        f"{name}: the first cell is the chapter's title (one '# ' heading)"
    titles = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
              if line.startswith("# ")]
    assert len(titles) == 1, f"{name}: one top-level heading per chapter, found {titles}"
    assert any("## Things to try" in c.source for c in nb.cells if c.cell_type == "markdown")


def test_toc_lists_the_chapters_in_pipeline_order():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert toc["format"] == "jb-book" and toc["root"] == "book/intro"
    files = [entry["file"] for entry in toc["chapters"]]
    assert files == [f"book/{name}" for name in CHAPTERS] + ["book/glossary"]
    for f in [toc["root"], *files]:
        assert any((ROOT / f).with_suffix(s).is_file() for s in (".md", ".ipynb")), f"{f} is missing"


def _mini_book(folder: Path, cell: str) -> Path:
    """A one-chapter book built with this repository's _config.yml around one code cell."""
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    folder.mkdir()
    (folder / "_config.yml").write_text(yaml.safe_dump(cfg))
    (folder / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: chapter\n")
    (folder / "intro.md").write_text("# A book\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A chapter"),
                                         nbformat.v4.new_code_cell(cell)])
    nb.metadata["kernelspec"] = KERNELSPEC
    nbformat.write(nb, folder / "chapter.ipynb")
    return folder


def _build(folder: Path) -> subprocess.CompletedProcess:
    """The build as `make book` runs it (Makefile: jupyter-book build -W -n --keep-going)."""
    jb = Path(sys.executable).with_name("jupyter-book")
    return subprocess.run([str(jb), "build", "-W", "-n", "--keep-going", str(folder)],
                          capture_output=True, text=True, timeout=300)


def test_a_failing_cell_fails_the_book_build(tmp_path):
    """The book's configuration executes every chapter and fails the build on an error
    (by default Jupyter Book renders the traceback and exits 0)."""
    good = _build(_mini_book(tmp_path / "good", "print(6 * 7)"))
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
    html = (tmp_path / "good" / "_build" / "html" / "chapter.html").read_text()
    assert "42" in html  # executed at build time, not rendered from stored outputs
    bad = _build(_mini_book(tmp_path / "bad", "1 / 0"))
    assert bad.returncode != 0
    assert "ZeroDivisionError" in bad.stdout + bad.stderr


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_keeps_its_scratch_folder_for_the_things_to_try(name):
    """A scratch folder removed in the last cell breaks every "thing to try" that reruns a
    demo after Run All; ``tempfile.TemporaryDirectory`` removes it when the kernel exits."""
    cleanups = [c.id for c in _code_cells(_read(name)) if ".cleanup()" in c.source]
    assert not cleanups, f"{name}: cells {cleanups} remove a scratch folder the reader may still use"
