"""Progress bars of the kind each place shows (tinylm.progress): a widget in a Jupyter kernel
that someone watches, text on a terminal, text with few redraws in a log or a headless kernel."""
from __future__ import annotations

import os
import pty
import subprocess
import sys

from tinylm import progress

KIND = [sys.executable, "-c", "from tinylm.progress import kind; print(kind())"]


def _kind_with_stderr(stderr, headless: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if k != progress.HEADLESS}
    if headless:
        env[progress.HEADLESS] = "1"
    return subprocess.run(KIND, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=60, check=True).stdout.strip()


def test_text_bars_redraw_every_second_on_a_terminal_and_seldom_in_a_log():
    primary, secondary = pty.openpty()
    try:
        assert _kind_with_stderr(secondary) == "watched"
        assert _kind_with_stderr(secondary, headless=True) == "log"
    finally:
        os.close(primary)
        os.close(secondary)
    assert _kind_with_stderr(subprocess.PIPE) == "log"
    assert progress.LOG_INTERVAL > progress.WATCHED_INTERVAL


def _run_in_kernel(code: str, timeout: float = 120) -> list[dict]:
    """Execute ``code`` in a fresh ipykernel; return the messages it output (``msg_type`` and
    ``content``)."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=timeout)
    outputs: list[dict] = []
    try:
        kc.execute_interactive(code, timeout=timeout,
                               output_hook=lambda msg: outputs.append({"msg_type": msg["msg_type"],
                                                                       "content": msg["content"]}))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return outputs


def test_a_kernel_shows_a_widget_and_a_headless_kernel_text_without_warnings():
    outputs = _run_in_kernel(
        "import os, tqdm.auto\n"  # tqdm's own detection (transformers uses it) must not warn either
        "from tinylm import progress\n"
        f"os.environ.pop({progress.HEADLESS!r}, None)\n"
        "with progress.bar(total=3, desc='watched') as b:\n"
        "    b.update(3)\n"
        f"os.environ[{progress.HEADLESS!r}] = '1'\n"
        "with progress.bar(total=3, desc='headless') as b:\n"
        "    b.update(3)\n")
    errors = [o["content"] for o in outputs if o["msg_type"] == "error"]
    assert not errors, errors
    stderr = "".join(o["content"]["text"] for o in outputs
                     if o["msg_type"] == "stream" and o["content"]["name"] == "stderr")
    widgets = [o for o in outputs if o["msg_type"] == "display_data"
               and "application/vnd.jupyter.widget-view+json" in o["content"]["data"]]
    assert len(widgets) == 1, outputs  # the watched bar, a widget
    assert "watched" not in stderr
    assert "headless: 100%" in stderr  # the headless bar, text that an executed notebook keeps
    assert "warn" not in stderr.lower() and "IProgress" not in stderr, stderr
