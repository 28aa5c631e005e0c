"""README.md runs as written: its first page cannot drift from the code.

Every ```bash and ```python block is executed, in the README's order, in one empty working
folder, exactly as written, the shell blocks as one terminal session (what one exports, such
as the activated PATH, the next one has): the shell tour (quick preset) builds ``runs/quick`` and
``exports/quick``, the ``--json`` block reads them, the Python tour opens the same run and
the transformers block loads the export. ``source .venv/bin/activate`` finds a ``.venv``
whose ``activate`` puts this test's interpreter first on PATH, with this checkout's tinylm.

Not executed, because they are what CI itself runs: the blocks whose every command is a
``make`` target (``make pipeline``, ``make test``, ``make book``, ``make lab``) and the
installation blocks (``python3 -m venv``, ``pip install``), which download packages. Nor the
training across machines (``torchrun --nnodes 2``), which needs a second machine; the data
parallelism it starts is tested in tests/integration/test_distributed.py.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tinylm.pipeline import BOOK_DIR

ROOT = BOOK_DIR.parent
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)
#: Commands of the blocks that are not executed (see the module docstring).
NOT_RUN = re.compile(r"^(make \w|python3 -m venv|pip install|\.venv/bin/pip install|torchrun --nnodes)")


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of every block the test executes, in the README's order."""
    blocks = BLOCK.findall((ROOT / "README.md").read_text())
    commands = lambda code: [l for l in code.replace("\\\n", " ").splitlines()  # noqa: E731
                             if l.strip() and not l.startswith("#")]  # a line continued by \ is one
    return [(lang, code) for lang, code in blocks
            if lang == "python" or not all(NOT_RUN.match(c) for c in commands(code))]


def test_the_readme_blocks_that_run_are_the_tours():
    kinds = [(lang, code.splitlines()[0]) for lang, code in readme_blocks()]
    assert kinds == [("bash", "source .venv/bin/activate"),
                     ("bash", "tinylm generate --output-dir runs/quick -n 3 --json    "
                              "# JSON Lines: lang, prompt, text, seed, settings"),
                     ("python", "from tinylm.config import load_preset"),
                     ("python", "from transformers import AutoModelForCausalLM, AutoTokenizer")]


def test_every_readme_block_runs_as_written(tmp_path):
    work = tmp_path / "work"
    (work / ".venv" / "bin").mkdir(parents=True)
    bindir = Path(sys.executable).parent
    (work / ".venv" / "bin" / "activate").write_text(f'export PATH="{bindir}:$PATH"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    session = tmp_path / "session.sh"  # the shell's exported state, from one block to the next
    session.write_text("")
    for i, (lang, code) in enumerate(readme_blocks(), 1):
        script = f"source {session}\n{code}\nexport -p > {session}\n"
        command = (["bash", "-e", "-o", "pipefail", "-c", script] if lang == "bash"
                   else [sys.executable, "-c", code])
        out = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=900)
        assert out.returncode == 0, (f"README block {i} ({lang}) failed with {out.returncode}:\n{code}\n"
                                     f"--- stdout\n{out.stdout[-3000:]}\n--- stderr\n{out.stderr[-3000:]}")
        if "| jq" in code:  # evaluate's .passed, .validation.val_bpb, then info's loss
            assert out.stdout.splitlines()[-3] == "true", out.stdout[-2000:]
    assert (work / "runs" / "quick" / "notebooks" / "07_evaluation.ipynb").is_file()
    assert (work / "runs" / "quick" / "loss_curves.png").is_file()
    assert (work / "exports" / "quick" / "model.safetensors").is_file()
