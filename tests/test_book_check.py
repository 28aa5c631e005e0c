"""`make book-check` finds what a reader of the built book would see broken.

A tiny site with one sound page and one with every fault is opened in headless Chromium by
tests/book_check.py. It needs the system's Chromium (CI installs it; `apt-get install -y
chromium`) and Playwright (the `book` extra); without them the test is skipped, saying why.
"""
from __future__ import annotations

import base64
import importlib.util
import shutil
from pathlib import Path

import pytest

pytest.importorskip("playwright", reason="Playwright comes with the book extra: pip install -e '.[book]'")
if not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")):
    pytest.skip("no Chromium on this machine (apt-get install -y chromium)", allow_module_level=True)

_spec = importlib.util.spec_from_file_location("book_check", Path(__file__).with_name("book_check.py"))
book_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(book_check)

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
PAGE = """<!doctype html><html><head><meta charset="utf-8">{head}</head>
<body><main style="width: 600px">{body}</main></body></html>"""
#: A stand-in for MathJax's output, as the book's pages have it once MathJax has run.
RENDER = "<script>document.addEventListener('DOMContentLoaded', () => document.querySelectorAll('.math')" \
         ".forEach((m) => m.replaceChildren(document.createElement('mjx-container'))))</script>"


def test_a_sound_page_passes_and_every_fault_is_found(tmp_path):
    site = tmp_path / "html"
    (site / "_images").mkdir(parents=True)
    (site / "_images" / "dot.png").write_bytes(PNG)
    (site / "good.html").write_text(PAGE.format(head=RENDER, body=(
        '<h1 id="top">Good</h1><p><span class="math">\\(x^2\\)</span> and <code>echo $HOME $PATH</code></p>'
        '<img src="_images/dot.png"><a href="bad.html#faults">faults</a> <a href="#top">top</a>'
        '<a href="https://example.org/">elsewhere</a><table><tr><td>narrow</td></tr></table>')))
    (site / "bad.html").write_text(PAGE.format(head="", body=(
        '<h1 id="faults">Bad</h1><p><span class="math">\\(x^2\\)</span> costs $a$ and $b$</p>'
        '<img src="_images/missing.png"><a href="nowhere.html">gone</a> <a href="good.html#nope">no anchor</a>'
        '<table><tr><th>a column far too wide for the text</th><td style="min-width: 900px">x</td></tr></table>')))

    problems = book_check.check(site)

    assert not [p for p in problems if p.startswith("good.html")], problems
    bad = "\n".join(problems)
    for fault in ("math elements but no MathJax output", "unrendered TeX '\\\\('", "'$' left in the text",
                  "image _images/missing.png did not load", "'nowhere.html' points at a missing file",
                  "'good.html#nope' points at a missing anchor", "table wider than the text column"):
        assert fault in bad, f"not found: {fault}\n{bad}"


#: A chapter's page as the book renders it: a reference to another page, and a cell whose
#: formatting code is folded behind a hide-input toggle.
CHAPTER = """<h1 id="c">Chapter</h1><p>See <a class="reference internal" href="{other}">{text}</a>.</p>
<div class="cell tag_hide-input"><details class="hide above-input"><summary>Show code cell source</summary>
<pre>Table(["a", "b"], rows)</pre></details><div class="cell_output"><p>output</p></div></div>
<pre>x = 1  # code that fits the column</pre>"""


def test_a_chapter_without_links_or_toggles_or_with_a_broken_reference_or_wide_code_fails(tmp_path):
    site = tmp_path / "html"
    (site / "book").mkdir(parents=True)
    (site / "book" / "01_sound.html").write_text(PAGE.format(head="", body=CHAPTER.format(
        other="02_plain.html#p", text="chapter 2")))
    (site / "book" / "02_plain.html").write_text(PAGE.format(head="", body=(
        '<h1 id="p">Plain</h1><p>As <span class="xref std std-ref">Figure 9.9</span> shows.</p>'
        '<pre>' + "x = 1" + " " * 90 + "# a line that a reader would have to scroll sideways to read</pre>"
        '<details><pre>' + "y" * 200 + '</pre></details>')))  # folded away: not on the page
    (site / "book" / "glossary.html").write_text(PAGE.format(head="", body='<h1 id="g">Glossary</h1>'))

    problems = book_check.check(site)

    assert not [p for p in problems if p.startswith(("book/01_sound", "book/glossary"))], problems
    plain = [p for p in problems if p.startswith("book/02_plain.html")]
    for fault in ("a chapter without internal links", "a chapter without hide-input toggles",
                  "unresolved reference 'Figure 9.9'", "code wider than the text column"):
        assert any(fault in p for p in plain), f"not found: {fault}\n{problems}"
    assert not any("yyyy" in p for p in plain), "a folded code block is not on the page"
