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
import io
import re
import tokenize

import nbformat
import pytest
import yaml

from tinylm.pipeline import BOOK_DIR, CHAPTERS, PARAMETERS

ROOT = BOOK_DIR.parent
#: The kernel the chapters name, as JupyterLab writes it when it opens and saves one (from the
#: installed ``python3`` kernelspec): other metadata would show every chapter as modified on open.
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
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
def test_chapter_metadata_is_what_jupyterlab_writes_on_open(name):
    """JupyterLab replaces a notebook's kernelspec and language_info with what the kernel reports
    when it starts, and shows the notebook as modified when they differ; the chapters carry
    exactly that (the version only to the minor release: a patch release of Python differs)."""
    from ipykernel.ipkernel import IPythonKernel
    from jupyter_client.kernelspec import KernelSpecManager

    meta = _read(name).metadata
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert meta.get("kernelspec") == {"name": "python3", "display_name": spec.display_name,
                                      "language": spec.language}
    reported, found = dict(IPythonKernel.language_info), dict(meta.get("language_info", {}))
    version = reported.pop("version"), found.pop("version", "")
    assert found == reported, f"{name}: language_info {found}, the kernel reports {reported}"
    assert version[1].split(".")[:2] == version[0].split(".")[:2], f"{name}: Python {version[1]}"


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


#: A cross reference in prose; it must be a MyST reference, which the strict build resolves.
CROSS_REFERENCE = re.compile(r"\b(?:[Cc]hapters? \d+|[Ss]ections? \d+\.\d+|(?:Figure|Table|Listing) \d+\.\d+)\b")
#: What is not a cross reference to link: references already, captions, code, math, targets.
NOT_PROSE = re.compile(r"\{(?:doc|ref|numref|term)\}`[^`]*`|\*\*(?:Figure|Table|Listing) \d+\.\d+\*\*"
                       r"|```.*?```|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|^\(\S+\)=$", re.S | re.M)
ROLE_TARGET = re.compile(r"\{(ref|numref|doc|term)\}`(?:[^`<]*<)?([^`>]+)>?`")
PAGES = ["intro.md", "glossary.md"]


def _strings(source: str) -> list[str]:
    """A code cell's one-line string literals: the Markdown it outputs (captions, table cells).
    Comments and triple-quoted strings (docstrings, embedded programs) are code, not prose."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return [t.string.replace("{{", "{").replace("}}", "}") for t in tokens
            if t.type == tokenize.STRING and not t.string.lstrip("rbfuRBFU").startswith(('"""', "'''"))]


def _prose(name: str) -> list[str]:
    """The text a reader reads on a page of the book: the chapter's Markdown cells and the
    Markdown its code cells write, or a Markdown page."""
    if name.endswith(".md"):
        return [(BOOK_DIR / name).read_text()]
    return [s for c in _read(name).cells
            for s in ([c.source] if c.cell_type == "markdown" else _strings(c.source))]


def unlinked_references(text: str) -> list[str]:
    """The cross references in ``text`` that are plain words instead of MyST references."""
    return CROSS_REFERENCE.findall(NOT_PROSE.sub(" ", text))


def _targets() -> set[str]:
    """The labels the book defines (``(label)=`` before a heading, figure, table or listing)."""
    texts = [t for name in CHAPTERS for t in _prose(name)] + [t for p in PAGES for t in _prose(p)]
    return {m for t in texts for m in re.findall(r"^\((\S+)\)=$", t, re.M)}


@pytest.mark.parametrize("name", CHAPTERS + PAGES)
def test_every_cross_reference_in_prose_is_a_link(name):
    """"chapter 4", "section 5.2", "Table 9.1": each is a {doc} or {ref} that the strict build
    checks, so that a renumbered or removed target fails the build instead of misleading."""
    unlinked = [ref for text in _prose(name) for ref in unlinked_references(text)]
    assert not unlinked, (f"{name}: write these as MyST references ({{doc}}`chapter 4 <04_data>`, "
                          f"{{ref}}`Table 5.3 <table-5-3>`): {unlinked}")


def _glossary_terms() -> set[str]:
    """The terms of book/glossary.md's ``{glossary}`` directive (unindented lines), lower-cased."""
    block = (BOOK_DIR / "glossary.md").read_text().split("```{glossary}")[1].split("```")[0]
    return {line.strip().lower() for line in block.splitlines() if line.strip() and line[0] != " "}


@pytest.mark.parametrize("name", CHAPTERS + PAGES)
def test_every_reference_names_a_target_that_exists(name):
    """A cheaper, earlier form of the strict build's check: labels, chapters and glossary
    terms that exist."""
    labels, docs, terms = _targets(), {*CHAPTERS, "glossary", "intro"}, _glossary_terms()
    known = {"doc": docs.__contains__, "term": lambda t: t.lower() in terms}
    missing = [target for text in _prose(name) for role, target in ROLE_TARGET.findall(text)
               if not known.get(role, labels.__contains__)(target)]
    assert not missing, f"{name}: references to targets that do not exist: {missing}"


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_links_the_glossary_terms_it_uses(name):
    """Each chapter links a glossary term where it first uses it, so a reader who meets the
    word without its explanation is one click from it."""
    linked = [t for text in _prose(name) for role, t in ROLE_TARGET.findall(text) if role == "term"]
    assert linked, f"{name}: no {{term}} link to the glossary"
    assert len(linked) == len({t.lower() for t in linked}), \
        f"{name}: a term linked more than once (link only its first use): {sorted(linked)}"


def test_the_reference_checks_find_plain_references_and_pass_links():
    assert unlinked_references("as chapter 4 shows, see Table 5.3 and section 7.1; Chapters 2 and 5") == \
        ["chapter 4", "Table 5.3", "section 7.1", "Chapters 2"]
    assert not unlinked_references(
        "as {doc}`chapter 4 <04_data>` shows, {ref}`Table 5.3 <table-5-3>`; chapters {doc}`2 <02_tokenization>`"
        " and {doc}`5 <05_training>`\n\n**Figure 5.1** — a caption\n\n`chapter 3 in code` $\\text{chapter 1}$")
    assert _strings('Markdown(f"**Table 2.1** — see {{doc}}`chapter 9 <09_x>`")  # chapter 9\n'
                    'x = """chapter 2"""') == ['f"**Table 2.1** — see {doc}`chapter 9 <09_x>`"']
    assert ROLE_TARGET.findall("{ref}`Table 5.3 <table-5-3>`, {doc}`04_data`") == \
        [("ref", "table-5-3"), ("doc", "04_data")]


@pytest.mark.parametrize("name", CHAPTERS)
def test_formatting_cells_are_folded_on_the_page_and_in_jupyterlab(name):
    """Cells that only format a table or write a caption are folded behind a toggle on the page
    (``hide-input``) and collapsed in JupyterLab (``jupyter.source_hidden``), so that the code
    left in view is the code a learner should read."""
    cells = _code_cells(_read(name))
    hidden = [c for c in cells if {"hide-input", "remove-input"} & set(c.metadata.get("tags", []))]
    assert any("hide-input" in c.metadata.get("tags", []) for c in hidden), \
        f"{name}: no cell is folded behind a hide-input toggle"
    expanded = [c.id for c in hidden if not c.metadata.get("jupyter", {}).get("source_hidden")]
    assert not expanded, f"{name}: hidden on the page but shown as code in JupyterLab: {expanded}"


#: The widest line of code the book's column shows without a sideways scroll bar
#: (`make book-check` measures the rendered column).
CODE_WIDTH = 88


@pytest.mark.parametrize("name", CHAPTERS)
def test_code_on_the_page_fits_the_column(name):
    """Visible code cells, and the code of solutions and examples in the text, are at most
    ``CODE_WIDTH`` characters wide; folded cells (hide-input) are not on the page."""
    wide = []
    for cell in _read(name).cells:
        if cell.cell_type == "code" and "hide-input" not in cell.metadata.get("tags", []):
            lines = cell.source.splitlines()
        elif cell.cell_type == "markdown":
            lines = [line for block in re.findall(r"```[^\n]*\n(.*?)```", cell.source, re.S)
                     for line in block.splitlines()]
        else:
            continue
        wide += [f"{cell.id}: {line}" for line in lines if len(line) > CODE_WIDTH]
    assert not wide, f"{name}: code lines wider than {CODE_WIDTH} characters:\n" + "\n".join(wide)
