"""The HTML book, rendered from the chapters the pipeline executed: ``make book``.

The book shows every chapter with the outputs of one run of the quick preset's pipeline, in
``_build/book-run``. The pipeline stamps each executed chapter with a digest of the sources it
ran with (``pipeline.sources_digest``: the chapter, the library, the chapters' helpers, the
presets and the committed results they show). This module executes, through ``tinylm
pipeline``, only the chapters whose executed copy is missing, failed or out of date, then
copies the book's sources with the executed chapters into ``_build/book-src``, which Jupyter
Book renders without executing anything (``_config.yml``). So the first ``make book`` runs
every chapter, a second one none, an edit to one chapter reruns that chapter, and after
``make test`` (whose pipeline test runs the quick pipeline in the same folder) nothing runs
again. A failing cell fails the build: the pipeline stops with the chapter's error.

    python -m tinylm.book_build [--run-dir _build/book-run] [--source-dir _build/book-src]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from tinylm.config import load_preset
from tinylm.pipeline import BOOK_DIR, CHAPTERS, chapter_is_current, shared_sources_digest

ROOT = BOOK_DIR.parent
#: What the rendered book needs besides the chapters, relative to the repository's root.
BOOK_FILES = ["_config.yml", "_toc.yml", "_static"]
PRESET = "quick"


def stale_chapters(run_dir: Path) -> list[str]:
    """The chapters whose executed copy in ``run_dir/notebooks`` is not a complete run of the
    quick preset, in ``run_dir``, with the sources as they are now."""
    run_dir = Path(run_dir).resolve()
    wanted = {"run_dir": str(run_dir), "config": load_preset(PRESET).to_dict()}
    shared = shared_sources_digest()
    return [name for name in CHAPTERS
            if not chapter_is_current(run_dir / "notebooks" / f"{name}.ipynb", BOOK_DIR / f"{name}.ipynb",
                              wanted, shared)]


def stage(run_dir: Path, dest: Path) -> None:
    """Copy the book's sources into ``dest``, each chapter as executed in ``run_dir``, the
    cell papermill injected (the run's folder and whole configuration) hidden from the page."""
    import nbformat

    if dest.exists():
        shutil.rmtree(dest)
    (dest / "book").mkdir(parents=True)
    for name in BOOK_FILES:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, dest / name)
    for page in BOOK_DIR.glob("*.md"):
        shutil.copy2(page, dest / "book" / page.name)
    for name in CHAPTERS:
        nb = nbformat.read(Path(run_dir) / "notebooks" / f"{name}.ipynb", as_version=4)
        for cell in nb.cells:
            tags = cell.metadata.get("tags", [])
            if "injected-parameters" in tags and "remove-cell" not in tags:
                cell.metadata["tags"] = [*tags, "remove-cell"]
        nbformat.write(nb, dest / "book" / f"{name}.ipynb")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinylm.book_build", description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=ROOT / "_build" / "book-run")
    parser.add_argument("--source-dir", type=Path, default=ROOT / "_build" / "book-src")
    args = parser.parse_args(argv)
    if not (ROOT / "_toc.yml").is_file():
        print(f"error: no book sources beside {BOOK_DIR} (the book builds from a source checkout)",
              file=sys.stderr)
        return 1
    stale = stale_chapters(args.run_dir)
    if stale:
        print(f"book: executing chapter(s) {', '.join(n[:2] for n in stale)} into {args.run_dir}",
              file=sys.stderr, flush=True)
        # --fresh: a run of older code is trained again, not resumed or asked about
        command = [sys.executable, "-m", "tinylm.cli", "pipeline", "--preset", PRESET, "--fresh",
                   "--output-dir", str(args.run_dir), "--chapters", ",".join(n[:2] for n in stale)]
        code = subprocess.run(command, stdin=subprocess.DEVNULL).returncode
        if code:
            return code
        if stale_chapters(args.run_dir):  # the sources changed while the chapters ran
            print("error: the book's sources changed while its chapters ran; run `make book` again",
                  file=sys.stderr)
            return 1
    else:
        print(f"book: every chapter in {args.run_dir} is current; none executed", file=sys.stderr)
    stage(args.run_dir, args.source_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
