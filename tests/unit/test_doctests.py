"""The examples in the library's docstrings run, and show what the code returns: an example
that shows a former default fails here, not in a reader's hands."""
from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import tinylm

SOURCE = Path(tinylm.__file__).resolve().parent
#: The modules with examples in their docstrings (only those are imported).
MODULES = sorted(p.stem for p in SOURCE.glob("*.py") if ">>>" in p.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_show_what_the_code_returns(name):
    result = doctest.testmod(importlib.import_module(f"tinylm.{name}"), report=True)
    examples = [line for line in (SOURCE / f"{name}.py").read_text(encoding="utf-8").splitlines()
                if line.lstrip().startswith(">>>") and "doctest: +SKIP" not in line]
    assert result.failed == 0
    assert result.attempted == len(examples)  # every example found ran, none was missed
