"""The chapters as files: what the pipeline, papermill and the book build rely on.

Executing the chapters is the pipeline test's job (tests/integration/test_pipeline.py runs
all of them, with papermill, in a run directory of its own; tests/unit/test_book_build.py checks
how the book renders the executed copies); these tests check the
contract that execution does not: chapters are committed clean (no outputs, no execution
counts), each declares the parameters the pipeline injects, and the table of contents lists
the same chapters (ten and an appendix), in the same order, as ``tinylm.pipeline.CHAPTERS``.
"""
from __future__ import annotations

import ast

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


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_keeps_its_scratch_folder_for_the_things_to_try(name):
    """A scratch folder removed in the last cell breaks every "thing to try" that reruns a
    demo after Run All; ``tempfile.TemporaryDirectory`` removes it when the kernel exits."""
    cleanups = [c.id for c in _code_cells(_read(name)) if ".cleanup()" in c.source]
    assert not cleanups, f"{name}: cells {cleanups} remove a scratch folder the reader may still use"
