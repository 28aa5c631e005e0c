"""What the book shows besides figures: tables, and the results of the reference run.

``Table`` is the one table type: a Markdown table in Jupyter and the rendered book, aligned
text in a terminal. ``load_reference`` reads the results of a full default-preset run that
are committed with the book, so that every chapter can set a small run beside a real one;
``load_benchmark`` reads the committed output of a script in ``benchmarks/``.

>>> print(Table(["lang", "bytes"], [["en", "1,024"]]))
lang  bytes
----  -----
en    1,024
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tinylm.pipeline import BOOK_DIR

#: Results of a full default-preset run, committed with the book for comparison.
REFERENCE_DIR = BOOK_DIR / "reference"
#: The benchmark scripts and their committed ``--json`` output (in a source checkout only).
BENCHMARKS_DIR = BOOK_DIR.parent / "benchmarks"


class Table:
    """Rows under headers; ``align`` holds one of ``l``, ``r``, ``c`` per column.

    By default the first column is left-aligned (text) and the others right-aligned
    (numbers). Cells are shown with ``str``; a ``|`` inside one is escaped in Markdown.
    """

    def __init__(self, headers: Sequence[str], rows: Sequence[Sequence[Any]],
                 align: str | None = None) -> None:
        self.headers = [str(h) for h in headers]
        self.rows = [[str(c) for c in row] for row in rows]
        self.align = align or "l" + "r" * (len(self.headers) - 1)

    def _repr_markdown_(self) -> str:
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        rule = {"l": ":--", "r": "--:", "c": ":-:"}
        lines = ["| " + " | ".join(map(esc, self.headers)) + " |",
                 "|" + "|".join(rule[a] for a in self.align) + "|"]
        lines += ["| " + " | ".join(map(esc, row)) + " |" for row in self.rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        widths = [max(len(r[i]) for r in [self.headers, *self.rows]) for i in range(len(self.headers))]
        fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        return "\n".join([fmt(self.headers), fmt(["-" * w for w in widths]), *map(fmt, self.rows)])

    __repr__ = __str__


def load_reference(name: str) -> dict | None:
    """``book/reference/<name>.json`` of the reference run (``training_metrics``, ``samples``,
    ``budgets``), or None when this checkout does not have it.

    The folder is found from the package, not the working directory, so a chapter, a script
    and a test all read the same file.
    """
    path = REFERENCE_DIR / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def load_benchmark(name: str) -> dict | None:
    """``benchmarks/<name>.json``, the committed output of a benchmark script, named by its
    folder and script (``throughput/train_throughput``: ``train_throughput.py --json``), or
    None when this checkout or installation lacks it.

    Found from the package like ``load_reference``, so a chapter opened from any working
    directory shows the same figures.
    """
    path = BENCHMARKS_DIR / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
