"""Every figure that README.md and benchmarks/README.md quote matches the committed file it
comes from, so no number on the first pages can outlive its measurement.

A figure is followed by an HTML comment naming its source, which GitHub does not show:

    28,600 tokens/s<!-- book/reference/training_metrics.json: timing.tokens_per_second -->

After the colon, an expression reads the file (JSON or TOML): keys and indices as in Python
(``history[-1].val_by_lang.en.loss``), numbers, and ``+ - * /``
(``timing.train_seconds / 60``). The test evaluates it and compares it with the last number
before the comment, rounded as that number is written: "28,600" has no decimals, "1.55" two.
A figure with a unit of time, speed, size or ratio that has no such comment fails the test:
a new measurement needs a committed source, or no number. Derived fields of the committed
results (parameter counts, FLOPs per token, MFU) must also match the current model code
(``benchmarks/tools/refresh_reference.py --check``). Every benchmark file a page names by its
path exists, and each committed result sits beside the script that wrote it, named after it.
The library's comments and docstrings say why and cite no measured figure: figures live here.
"""
from __future__ import annotations

import ast
import io
import json
import operator
import re
import subprocess
import sys
import tokenize
import tomllib

import pytest

from tinylm.pipeline import BOOK_DIR

ROOT = BOOK_DIR.parent
PAGES = ["README.md", "benchmarks/README.md"]
MARKER = re.compile(r"<!--\s*(?P<file>[\w./-]+\.(?:json|toml))\s*:\s*(?P<expr>.+?)\s*-->")
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?")
#: A number with a unit of time, speed, size or ratio: what a measurement looks like.
FIGURE = re.compile(r"(?<![\w.,])\d[\d,]*(?:\.\d+)?(?:%|x\b|\s?(?:ms|us|µs|s|min|minutes?|hours?|"
                    r"seconds?|[KMG]i?B|tokens/s|tok/s|[MGT]FLOP/s|MFLOP)(?![\w/]))")
OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _prose(text: str) -> str:
    """The page without fenced code blocks and inline code (commands, not figures)."""
    text = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "``", text)


def _evaluate(expr: str, data) -> float:
    """``expr`` with names, attributes and subscripts looked up in ``data``."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
            return node.value
        if isinstance(node, ast.Name):
            return data[node.id]
        if isinstance(node, ast.Attribute):
            return ev(node.value)[node.attr]
        if isinstance(node, ast.Subscript):
            return ev(node.value)[ev(node.slice)]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            return OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(f"unsupported in a figure's source: {ast.dump(node)}")
    return ev(ast.parse(expr, mode="eval"))


def _load(name: str):
    path = ROOT / name
    assert path.is_file(), f"the cited source {name} is not in the repository"
    return tomllib.loads(path.read_text()) if name.endswith(".toml") else json.loads(path.read_text())


def _markers(page: str) -> list[tuple[int, str, str, str]]:
    """(line, quoted number, file, expression) of every cited figure of ``page``."""
    text, out, start = _prose((ROOT / page).read_text()), [], 0
    for m in MARKER.finditer(text):
        numbers = NUMBER.findall(text[start:m.start()])
        line = text.count("\n", 0, m.start()) + 1
        assert numbers, f"{page}:{line}: a source comment with no figure before it"
        out.append((line, numbers[-1], m["file"], m["expr"]))
        start = m.end()
    return out


@pytest.mark.parametrize("page", PAGES)
def test_every_cited_figure_matches_its_source(page):
    cited = _markers(page)
    assert cited, f"{page} cites no figure"
    wrong = []
    for lineno, quoted, file, expr in cited:
        value = float(_evaluate(expr, _load(file)))
        decimals = len(quoted.partition(".")[2])
        if f"{value:.{decimals}f}" != f"{float(quoted.replace(',', '')):.{decimals}f}":
            wrong.append(f"{page}:{lineno}: {quoted} but {file}: {expr} = {value:.{decimals + 2}f}")
    assert not wrong, "figures that no longer match their source:\n" + "\n".join(wrong)


@pytest.mark.parametrize("page", PAGES)
def test_every_measured_figure_cites_a_source(page):
    text, unsourced = _prose((ROOT / page).read_text()), []
    for m in FIGURE.finditer(text):  # over line breaks too: "9.5\nminutes" is a figure
        rest = text[m.end():]
        nxt = MARKER.search(rest)
        if nxt is None or NUMBER.search(rest[:nxt.start()]):
            line = text.count("\n", 0, m.start()) + 1
            unsourced.append(f"{page}:{line}: {' '.join(m.group(0).split())!r}")
    assert not unsourced, ("figures without a committed source (cite one, or say it in words):\n"
                           + "\n".join(unsourced))


def test_the_checker_catches_a_stale_figure_and_an_unsourced_one():
    data = {"timing": {"train_seconds": 512.72}, "history": [{"val_bpb": 1.5521}]}
    assert f"{_evaluate('timing.train_seconds / 60', data):.1f}" == "8.5"
    assert f"{_evaluate('history[-1].val_bpb', data):.2f}" == "1.55"
    assert [m.group(0) for m in FIGURE.finditer("9.5\nminutes, 28,600 tokens/s, 2.62x, 30%, 3 layers")] \
        == ["9.5\nminutes", "28,600 tokens/s", "2.62x", "30%"]
    assert not FIGURE.search(_prose("`--epochs 5 --timeout 30s`\n```bash\nsleep 5s\n```"))


def test_derived_fields_of_the_committed_results_match_the_model_code():
    script = ROOT / "benchmarks" / "tools" / "refresh_reference.py"
    out = subprocess.run([sys.executable, str(script), "--check"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


#: The pages that name benchmark files by their path in the repository.
NAMING_PAGES = ["README.md", "ARCHITECTURE.md", "benchmarks/README.md", "book/*.ipynb"]
BENCHMARK_PATH = re.compile(r"benchmarks/[\w./-]+?\.(?:py|json|sh)\b")
LINK = re.compile(r"\]\(([^)#\s]+)\)")
ANCHOR = re.compile(r"\]\(#([^)\s]+)\)")


def test_every_benchmark_file_a_page_names_exists():
    missing = []
    for pattern in NAMING_PAGES:
        for page in sorted(ROOT.glob(pattern)):
            text = page.read_text(encoding="utf-8")
            named = {ROOT / p for p in BENCHMARK_PATH.findall(text)}
            if page.parent.name == "benchmarks":  # its links are relative to the folder
                named |= {page.parent / link for link in LINK.findall(text) if "://" not in link}
                headings = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-")
                            for h in re.findall(r"^#+ (.+)$", text, re.M)}  # GitHub's anchors
                missing += [f"{page.relative_to(ROOT)}: #{a}" for a in ANCHOR.findall(text)
                            if a not in headings]
            missing += [f"{page.relative_to(ROOT)}: {p.relative_to(ROOT)}" for p in sorted(named)
                        if not p.exists()]
    assert not missing, "named but not in the repository:\n" + "\n".join(missing)


def test_every_committed_result_sits_beside_the_script_that_wrote_it():
    """``<script>.json`` or ``<script>_<variant>.json`` in the script's own folder; nothing but
    the README and the folders at the top of benchmarks/."""
    bench, stray = ROOT / "benchmarks", []
    stray += [p.name for p in bench.iterdir() if p.is_file() and p.name != "README.md"]
    for result in sorted(bench.rglob("*.json")):
        scripts = [s.stem for s in result.parent.iterdir() if s.suffix in (".py", ".sh")]
        if not any(result.stem == s or result.stem.startswith(f"{s}_") for s in scripts):
            stray.append(str(result.relative_to(bench)))
    assert not stray, "benchmark files named after no script beside them:\n" + "\n".join(stray)


def _library_prose() -> list[tuple[str, int, str]]:
    """(file, line, text) of every comment and docstring of the library."""
    out = []
    for path in sorted((ROOT / "tinylm").glob("*.py")):
        name, source = f"tinylm/{path.name}", path.read_text(encoding="utf-8")
        out += [(name, tok.start[0], tok.string) for tok in
                tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT]
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and (doc := ast.get_docstring(node, clean=False)) is not None:
                out.append((name, node.body[0].lineno, doc))
    return out


def test_the_library_says_why_and_cites_no_measured_figure():
    """A measured figure in a comment or docstring outlives its measurement unchecked; it
    belongs in benchmarks/README.md, beside the script that measured it."""
    cited = [f"{name}:{line + prose.count(chr(10), 0, m.start())}: {' '.join(m.group(0).split())!r}"
             for name, line, text in _library_prose() for prose in [_prose(text)]
             for m in FIGURE.finditer(prose)]
    assert not cited, ("measured figures in the library's comments and docstrings (move them to "
                       "benchmarks/README.md, cited):\n" + "\n".join(cited))
