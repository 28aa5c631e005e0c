"""Progress bars that move where someone watches them: every bar tinylm shows is made here.

- In a Jupyter kernel with a front end (JupyterLab, Notebook): a widget (``tqdm.notebook``),
  redrawn as the steps go. A text bar there was redrawn only every few seconds, because the
  kernel's stderr is not a terminal, so an epoch showed 0 % and then 100 %.
- In a kernel that no one watches (a chapter the pipeline executes; the pipeline sets
  ``TINYLM_HEADLESS`` for its kernels): text. The executed notebook keeps its last state, which
  the book renders; a widget would leave only a reference to a model that no page can show.
- On a terminal: text redrawn every second. In a log (CI, a file): text at most every
  ``LOG_INTERVAL`` seconds, a few lines per epoch rather than one per step.

The widget needs ipywidgets (a dependency of tinylm); without it a kernel gets the text bar,
never tqdm's "IProgress not found" warning.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from tqdm import tqdm

#: Set (to anything but "") in the environment of kernels whose output no one watches live.
HEADLESS = "TINYLM_HEADLESS"
#: Seconds between redraws of a text bar someone watches (a terminal, a kernel's output area).
WATCHED_INTERVAL = 1.0
#: Seconds between redraws of a text bar written to a log or an executed notebook.
LOG_INTERVAL = 10.0


def in_kernel() -> bool:
    """True inside a Jupyter kernel (not in a terminal IPython, not in plain Python)."""
    if "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


def kind() -> str:
    """The bar this process shows: "widget", "watched" text or "log" text (see above)."""
    headless = bool(os.environ.get(HEADLESS))
    if in_kernel() and not headless:
        return "widget" if importlib.util.find_spec("ipywidgets") is not None else "watched"
    return "watched" if not headless and sys.stderr.isatty() else "log"


def bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar of the kind this process shows; takes tqdm's arguments (``total``,
    ``desc``, ``unit``, ``disable``, ...). Text goes to stderr."""
    shown = kind()
    if shown == "widget":
        from tqdm.notebook import tqdm as widget

        return widget(iterable, **kwargs)
    interval = WATCHED_INTERVAL if shown == "watched" else LOG_INTERVAL
    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, mininterval=interval, **kwargs)
