"""JupyterLab as `make lab` opens it: the chapters' MyST rendered (jupyterlab-myst).

Without the extension Lab shows every ``:::{dropdown} Solution`` as raw text, the answer in
view. `make lab-check` (tests/lab_check.py) opens a chapter in a real browser; this is the cheap
check that the extension is installed and enabled in this environment.
(`jupyter labextension list` marks jupyterlab-myst 2.7 as built against an older @jupyter/ydoc
than JupyterLab 4.6 ships; it loads and renders all the same, so only "enabled" is required.)
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jupyterlab", reason="JupyterLab comes with the book extra: pip install -e '.[book]'")


def test_jupyterlab_myst_is_installed_and_enabled():
    jupyter = Path(sys.executable).with_name("jupyter")
    out = subprocess.run([str(jupyter), "labextension", "list"], capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    listing = out.stdout + out.stderr  # jupyter prints the list on stderr
    assert out.returncode == 0, listing[-2000:]
    lines = [line for line in listing.splitlines() if line.strip().startswith("jupyterlab-myst ")]
    assert lines, f"jupyterlab-myst is not installed (pip install -e '.[book]'):\n{listing}"
    assert "enabled" in lines[0] and "disabled" not in lines[0], lines[0]
