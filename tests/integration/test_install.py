"""A plain (not editable) ``pip install .`` carries the chapters and presets with the package.

The source is copied out of the repository and installed with ``--target`` into a fresh
folder, offline and without dependencies (torch and the rest come from this environment),
then imported from a directory outside the repository.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

import tinylm
from tinylm.config import PRESETS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(tinylm.__file__).resolve().parent.parent


def test_installed_package_finds_the_chapters_and_presets(tmp_path):
    src = tmp_path / "src"
    for name in ("pyproject.toml", "README.md"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    for name in ("tinylm", "book", "examples"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                          "--no-build-isolation", "--no-index", "--target", str(site), str(src)],
                         capture_output=True, text=True, timeout=120)
    assert pip.returncode == 0, pip.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = ("import json, tinylm, tinylm.config as c, tinylm.pipeline as p\n"
             "print(json.dumps({'file': tinylm.__file__, 'chapters': [str(x) for x in p.chapter_paths()],"
             " 'presets': [c.load_preset(n).name for n in c.PRESETS]}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=elsewhere,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout)
    assert Path(found["file"]).is_relative_to(site)
    assert [Path(c).name for c in found["chapters"]] == sorted(p.name for p in (ROOT / "book").glob("*.ipynb"))
    assert all(Path(c).is_relative_to(site) for c in found["chapters"])
    assert found["presets"] == list(PRESETS)


def test_the_torch_floor_is_a_torch_whose_safe_loading_holds():
    """Checkpoints load with weights_only=True, which torch before 2.6 lets a crafted file
    bypass: no install may resolve to such a torch."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(Requirement(d) for d in deps if Requirement(d).name == "torch")
    assert not torch.specifier.contains("2.5.1") and not torch.specifier.contains("2.4.0")
    assert torch.specifier.contains("2.6.0") and torch.specifier.contains("2.13.0")
