"""The built book, checked in a real browser: `make book-check`, after `make book`.

    python tests/book_check.py [_build/html] [--screenshots DIR]

Every page of the HTML book is opened in headless Chromium (the system's, driven by
Playwright) at a common laptop width, and must have:

- its math rendered: MathJax output present where the page has math, and no TeX left in
  the text (``\\(``, ``\\[``, ``$...$``) outside code;
- every image loaded (``naturalWidth > 0``);
- every internal link pointing at a page that exists, and at an anchor on it that exists, and
  no cross reference left unresolved (a ``{ref}`` or ``{doc}`` whose target is missing renders
  as plain text);
- no table wider than the text column, and no visible code block wider than it (a reader would
  have to scroll it sideways);
- on a chapter (``NN_name.html``): at least one internal link (its references to other
  chapters, sections, figures, tables and the glossary) and at least one hide-input toggle (the
  cells that only format a table or write a caption, folded away).

The internal links and toggles of each chapter are counted and printed.

``--screenshots DIR`` also saves a full-page PNG of each page, for a person to look at.
Exits 1 and lists the problems when there are any.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: The window the pages are checked in: a common laptop screen.
WIDTH, HEIGHT = 1280, 800
#: Chromium as root, offline: no sandbox, no GPU, no background connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: Pages of the build that are not the book's own (search, index); redirects are skipped too.
SKIP = {"search.html", "genindex.html"}
#: A chapter's page: its notebook's name, ``NN_name``.
CHAPTER = re.compile(r"(^|/)\d\d_[^/]+\.html$")

#: Runs in the page once MathJax is done; returns what the checks need.
INSPECT = r"""async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const main = document.querySelector("main") || document.body;
  const texts = [];
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT, {acceptNode: (n) =>
    n.parentElement.closest("pre, code, script, style, mjx-container, .highlight, .cell_output")
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  while (walker.nextNode()) texts.push(walker.currentNode.nodeValue);
  const column = main.getBoundingClientRect();
  return {
    math_sources: document.querySelectorAll(".math, span.math, div.math").length,
    math_rendered: document.querySelectorAll("mjx-container").length,
    text: texts.join(" "),
    images: [...document.images].map((i) => ({src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0})),
    links: [...document.querySelectorAll("a[href]")].map((a) => a.getAttribute("href")),
    ids: [...document.querySelectorAll("[id]")].map((e) => e.id),
    internal_links: main.querySelectorAll("a.reference.internal").length,
    unresolved: [...main.querySelectorAll(".xref")].filter((x) => !x.closest("a"))
      .map((x) => x.textContent.trim().slice(0, 60)),
    toggles: main.querySelectorAll("details.hide.above-input").length,
    wide_code: [...main.querySelectorAll("pre")].filter((p) =>
      p.checkVisibility() && p.scrollWidth > p.clientWidth + 1)
      .map((p) => p.textContent.split("\n").reduce((a, b) => (b.length > a.length ? b : a), "").trim().slice(0, 60)),
    wide_tables: [...main.querySelectorAll("table")].filter((t) =>
      t.getBoundingClientRect().right > column.right + 1 ||
      (t.parentElement.scrollWidth > t.parentElement.clientWidth + 1 &&
       getComputedStyle(t.parentElement).overflowX !== "visible"))
      .map((t) => (t.querySelector("caption") || t.querySelector("th") || t).textContent.trim().slice(0, 60)),
  };
}"""

RAW_TEX = [r"\(", r"\)", r"\[", r"\]", "$$"]


def chromium() -> str:
    """The system's Chromium (Playwright's own browser download is not used)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("book-check: no Chromium found; install it (Debian: apt-get install -y chromium)")


def problems_of(page: str, found: dict) -> list[str]:
    """What is wrong with one page, from what ``INSPECT`` found on it (links aside)."""
    out = []
    if found["math_sources"] and not found["math_rendered"]:
        out.append(f"{page}: {found['math_sources']} math elements but no MathJax output")
    text = found["text"]
    for tex in RAW_TEX:
        if tex in text:
            at = text.index(tex)
            out.append(f"{page}: unrendered TeX {tex!r} in the text: ...{text[max(0, at - 40):at + 40]}...")
    dollars = [i for i, ch in enumerate(text) if ch == "$"]
    if len(dollars) >= 2:
        out.append(f"{page}: '$' left in the text (unrendered math?): ...{text[dollars[0]:dollars[0] + 60]}...")
    out += [f"{page}: image {img['src']} did not load" for img in found["images"] if not img["ok"]]
    out += [f"{page}: table wider than the text column at {WIDTH} px: {name!r}"
            for name in found["wide_tables"]]
    out += [f"{page}: code wider than the text column at {WIDTH} px: {line!r}"
            for line in found["wide_code"]]
    out += [f"{page}: unresolved reference {text!r} (its target is missing)" for text in found["unresolved"]]
    if CHAPTER.search(page):
        if not found["internal_links"]:
            out.append(f"{page}: a chapter without internal links (references to chapters, sections, "
                       "figures, tables or the glossary)")
        if not found["toggles"]:
            out.append(f"{page}: a chapter without hide-input toggles (cells that only format output)")
    return out


def broken_links(site: Path, pages: dict[str, dict]) -> list[str]:
    """Internal links to a missing file, or to an anchor missing on the page they name."""
    out = []
    for page, found in pages.items():
        for href in found["links"]:
            url = urlsplit(href)
            if url.scheme or url.netloc or href.startswith("mailto:"):
                continue  # external: not this book's to check offline
            target = (site / page).parent / unquote(url.path) if url.path else site / page
            target = target.resolve()
            if not target.exists():
                out.append(f"{page}: link {href!r} points at a missing file")
                continue
            key = target.relative_to(site.resolve()).as_posix() if target.is_file() else None
            if url.fragment and key in pages and unquote(url.fragment) not in pages[key]["ids"]:
                out.append(f"{page}: link {href!r} points at a missing anchor")
    return out


def check(site: Path, screenshots: Path | None = None) -> list[str]:
    """Open every page of the built book in Chromium; return the problems found."""
    from playwright.sync_api import sync_playwright

    names = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                   if p.name not in SKIP and not p.relative_to(site).parts[0].startswith("_")
                   and 'http-equiv="refresh"' not in p.read_text(errors="replace").lower())
    if not names:
        return [f"{site}: no HTML pages (run `make book` first)"]
    found: dict[str, dict] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        view = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        for name in names:
            view.goto((site / name).resolve().as_uri(), wait_until="load")
            found[name] = view.evaluate(INSPECT)
            if screenshots is not None:
                screenshots.mkdir(parents=True, exist_ok=True)
                view.screenshot(path=screenshots / name.replace("/", "_").replace(".html", ".png"),
                                full_page=True)
        browser.close()
    for name in names:
        if CHAPTER.search(name):
            print(f"{name}: {found[name]['internal_links']} internal links, "
                  f"{found[name]['toggles']} hide-input toggles", file=sys.stderr)
    return [p for name in names for p in problems_of(name, found[name])] + broken_links(site, found)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("site", nargs="?", default="_build/html", type=Path)
    p.add_argument("--screenshots", type=Path, default=None, help="save a PNG of each page here")
    a = p.parse_args()
    problems = check(a.site, a.screenshots)
    for line in problems:
        print(line)
    print(f"book-check: {len(problems)} problem(s) in {a.site}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
