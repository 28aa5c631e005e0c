"""A chapter run in JupyterLab, in a real browser: `make lab-check`.

    python tests/lab_check.py [--chapter 01_overview] [--screenshots DIR] [--timeout 300]

JupyterLab is started by `make lab` (``LAB_DIR``, ``LAB_ARGS``: ``--no-browser``, a port and a
token of its own), on a copy of one chapter in a temporary folder whose parameters cell points
the chapter's run there too (Run All would otherwise write outputs into the committed chapter,
and a run into ``runs/book``), with one cell added at the end that prints the kernel's
``OMP_WAIT_POLICY``. Headless Chromium (the system's, driven by Playwright) opens the chapter
and checks that:

- it does not show as modified once its kernel has started (the metadata Lab writes);
- its MyST renders: a ``{dropdown}`` is a folded ``<details>`` that opens, not raw text;
- Run All executes every code cell, with no error output and no warning on stderr;
- the kernel's OpenMP threads sleep when idle (``PASSIVE``), as the pipeline's do.

Every wait is bounded. Exits 1 and lists the problems when there are any.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from book_check import CHROMIUM_ARGS, chromium  # noqa: E402  (the same browser, the same flags)

ROOT = HERE.parent
BOOK = ROOT / "book"
#: The cell added at the end of the copy: what the kernel's environment says.
KERNEL_ENV = 'import os\nprint("OMP_WAIT_POLICY =", os.environ.get("OMP_WAIT_POLICY"))'
#: The settings a fresh Lab would ask about or change: no news pop-up over the page, and every
#: cell in the page (not only those scrolled into view), so that all can be checked.
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}
#: A library's noise on stderr (as the pipeline test scans for it).
NOISE = re.compile(r"warn|IProgress|Loading weights|Traceback", re.IGNORECASE)

#: Runs in the page: the state of the notebook's cells.
CELLS = r"""() => {
  const cells = [...document.querySelectorAll(".jp-Notebook .jp-CodeCell")];
  const outputs = [...document.querySelectorAll(".jp-Notebook .jp-OutputArea-output")];
  return {
    code: cells.length,
    prompts: cells.map((c) => (c.querySelector(".jp-InputPrompt") || {}).textContent || ""),
    errors: outputs.filter((o) => o.getAttribute("data-mime-type") === "application/vnd.jupyter.stderr" &&
        o.textContent.includes("Traceback (most recent call last)"))
      .map((o) => o.textContent.trim().slice(-300)),
    stderr: outputs.filter((o) => o.getAttribute("data-mime-type") === "application/vnd.jupyter.stderr")
      .map((o) => o.textContent),
    raw_myst: [...document.querySelectorAll(".jp-MarkdownCell .jp-MarkdownOutput")]
      .filter((c) => c.textContent.includes(":::{dropdown}")).length,
    dirty: document.querySelectorAll(".lm-TabBar-tab.jp-mod-dirty").length,
    status: (document.querySelector("#jp-main-statusbar") || document.body).innerText,
  };
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(chapter: str, folder: Path) -> Path:
    """A copy of ``chapter`` (and the chapters' helper module) whose run goes into ``folder``."""
    import nbformat

    nb = nbformat.read(BOOK / f"{chapter}.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "run_dir = None" in params.source, params.source
    params.source = params.source.replace("run_dir = None", f"run_dir = {str(folder / 'run')!r}", 1)
    nb.cells.append(nbformat.v4.new_code_cell(KERNEL_ENV, id="lab-check-environment"))
    nbformat.write(nb, folder / f"{chapter}.ipynb")
    shutil.copy2(BOOK / "diagrams.py", folder / "diagrams.py")
    settings = folder / ".lab" / "settings"
    for name, value in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    return folder / f"{chapter}.ipynb"


def start_lab(folder: Path, port: int, token: str, timeout: float) -> subprocess.Popen:
    """JupyterLab on ``folder``, started by `make lab`; returns once it answers."""
    args = [f"--no-browser --port={port} --ServerApp.ip=127.0.0.1 --ServerApp.token={token}",
            f"--LabApp.user_settings_dir={folder / '.lab' / 'settings'}",
            f"--LabApp.workspaces_dir={folder / '.lab' / 'workspaces'}"]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # what `make lab` sets
    log = open(folder / ".lab" / "server.log", "w")
    lab = subprocess.Popen(["make", "-s", "--no-print-directory", "lab", f"LAB_DIR={folder}",
                            f"LAB_ARGS={' '.join(args)}"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {lab.returncode}:\n"
                               + (folder / ".lab" / "server.log").read_text()[-2000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5):
                return lab
        except OSError:
            time.sleep(1)
    stop_lab(lab)
    raise RuntimeError(f"jupyter lab did not answer within {timeout:.0f} s")


def stop_lab(lab: subprocess.Popen) -> None:
    """Stop the server and the kernels it started (its process group)."""
    if lab.poll() is None:
        os.killpg(lab.pid, signal.SIGTERM)
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
            lab.wait(timeout=30)


def wait_for(check, timeout: float, what: str, interval: float = 0.5):
    """Poll ``check()`` until it returns something true; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def not_executed(state: dict) -> list[int]:
    """The code cells whose prompt shows no execution count (a cell whose input is collapsed,
    ``jupyter.source_hidden``, shows no prompt: its neighbours show how far Run All came)."""
    return [i for i, p in enumerate(state["prompts"]) if p.strip() and not re.fullmatch(r"\[\d+\]:", p.strip())]


def finished(state: dict) -> dict | None:
    """``state`` once the kernel is idle and every code cell shows an execution count."""
    shown = [p for p in state["prompts"] if p.strip()]
    done = state["code"] and shown and "| Idle" in state["status"] and not not_executed(state)
    return state if done else None


def check(chapter: str, timeout: float, screenshots: Path | None = None) -> list[str]:
    """Open ``chapter`` in JupyterLab in Chromium, run it all; return the problems found."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tinylm-lab-check-") as tmp:
        folder = Path(tmp)
        prepare(chapter, folder)
        port, token = free_port(), secrets.token_hex(16)
        lab = start_lab(folder, port, token, timeout=min(timeout, 120))

        def shot(name: str) -> None:
            if screenshots is not None:
                screenshots.mkdir(parents=True, exist_ok=True)
                view.screenshot(path=screenshots / f"lab-{chapter}-{name}.png")

        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
                view = browser.new_page(viewport={"width": 1280, "height": 900})
                view.set_default_timeout(60_000)
                view.goto(f"http://127.0.0.1:{port}/lab/tree/{chapter}.ipynb?token={token}",
                          timeout=120_000)
                view.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
                view.wait_for_function(f"() => ({CELLS})().status.includes('(ipykernel) | Idle')",
                                       timeout=120_000)  # the kernel has started
                time.sleep(3)  # Lab writes the kernel's metadata once it has started
                state = view.evaluate(CELLS)
                if state["dirty"]:
                    problems.append(f"{chapter}: shown as modified on open (its metadata is not what Lab writes)")
                shot("opened")

                dropdowns = view.locator("details.myst-dropdown")
                if state["raw_myst"] or not dropdowns.count():
                    problems.append(f"{chapter}: no rendered dropdown ({state['raw_myst']} Markdown cells "
                                    "show ':::{dropdown}' as text: is jupyterlab-myst installed?)")
                else:
                    first = dropdowns.first
                    first.scroll_into_view_if_needed()
                    if first.get_attribute("open") is not None:
                        problems.append(f"{chapter}: a solution's dropdown is open before a click")
                    first.locator("summary").click()
                    view.wait_for_function("(d) => d.open", arg=first.element_handle(), timeout=10_000)
                    if not first.inner_text().strip():
                        problems.append(f"{chapter}: an opened dropdown shows nothing")
                    shot("dropdown")

                view.get_by_role("menuitem", name="Run", exact=True).click()
                view.get_by_role("menuitem", name="Run All Cells", exact=True).click()
                try:
                    state = wait_for(lambda: finished(view.evaluate(CELLS)), timeout,
                                     "Run All finishing every code cell", interval=1.0)
                except TimeoutError as exc:
                    state = view.evaluate(CELLS)
                    problems.append(f"{chapter}: {exc} (code cells not executed: {not_executed(state)[:10]})")
                problems += [f"{chapter}: error output: {e}" for e in state["errors"]]
                if "OMP_WAIT_POLICY = PASSIVE" not in view.locator(".jp-Notebook").inner_text():
                    problems.append(f"{chapter}: the kernel's OMP_WAIT_POLICY is not PASSIVE "
                                    "(`make lab` sets it for the kernels it starts)")
                problems += [f"{chapter}: warning on stderr: {line.strip()[:200]}" for text in state["stderr"]
                             for line in text.splitlines() if NOISE.search(line) and "Traceback" not in line]
                shot("after-run-all")
                browser.close()
        finally:
            stop_lab(lab)
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chapter", default="01_overview", help="the chapter to run (one with a dropdown)")
    p.add_argument("--timeout", type=float, default=300, help="seconds Run All may take")
    p.add_argument("--screenshots", type=Path, default=None, help="save PNGs of the page here")
    a = p.parse_args()
    t0 = time.monotonic()
    problems = check(a.chapter, a.timeout, a.screenshots)
    for line in problems:
        print(line)
    print(f"lab-check: {len(problems)} problem(s) in {a.chapter}, {time.monotonic() - t0:.0f} s",
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
