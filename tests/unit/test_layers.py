"""The package's structure: which module may import which, and what loads what."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())", "--config", str(ROOT / "pyproject.toml"), "--no-cache"]
HEAVY = ("torch", "numpy", "tokenizers", "matplotlib", "papermill")


def _lint(package_parent: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(LINT, capture_output=True, text=True, timeout=120, cwd=package_parent, env=env)


def test_imports_run_one_way_between_the_layers_without_cycles():
    """pyproject.toml's import-linter contracts (ARCHITECTURE.md, "Layers")."""
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 2 kept, 0 broken." in out.stdout


def test_a_wrong_way_import_breaks_the_contract(tmp_path):
    """The check can fail: a core module importing the harness, even inside a function."""
    shutil.copytree(ROOT / "tinylm", tmp_path / "tinylm", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "tinylm" / "corpus.py", "a") as f:
        f.write("\n\ndef _wrong_way():\n    from tinylm.checkpoint import load_checkpoint\n")
    out = _lint(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "tinylm.corpus is not allowed to import tinylm.checkpoint" in out.stdout


def test_the_command_line_loads_no_heavy_library_before_it_has_work():
    """Why the command line may import the harness at module level but imports the core's
    torch modules inside functions: bad input is refused without paying for torch."""
    code = ("import sys, tinylm.cli, tinylm.stages, tinylm.pipeline; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_chapter_imports_the_command_line():
    """The chapters are read beside the library: what they use lives below the entry point."""
    import nbformat

    found = []
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code" and re.search(r"^\s*(from tinylm\.cli |import tinylm\.cli)",
                                                      cell.source, re.M):
                found.append(path.name)
    assert found == []


def test_every_module_has_a_layer():
    """A module left out of the contract would be free to import anything."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c["layers"] for c in config["contracts"] if c["type"] == "layers")
    placed = {name.strip() for layer in layers for name in re.split(r"[:|]", layer)}
    modules = {p.stem for p in (ROOT / "tinylm").glob("*.py")} - {"__init__"}
    assert modules - placed == set() and placed - modules == set()
