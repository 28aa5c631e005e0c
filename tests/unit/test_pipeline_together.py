"""The chapters that run beside each other once the model is trained (``pipeline.CONCURRENT``):
every one runs, a failure is reported as one chapter's error, the first in book order, and
the chapters not yet started when one fails are not started. The chapters that run one at a
time get kernels started while the chapter before runs (``pipeline.KernelsAhead``)."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from tinylm.errors import TinyLMError
from tinylm.pipeline import CHAPTERS, CONCURRENT, _execute_together

CHAPTER = {name[:2]: Path(f"{name}.ipynb") for name in CHAPTERS}


def test_concurrent_chapters_come_after_training_and_leave_out_the_latency_chapter():
    assert set(CONCURRENT) <= set(CHAPTERS[CHAPTERS.index("05_training") + 1:])
    assert "10_budgets" not in CONCURRENT and len(set(CONCURRENT)) == len(CONCURRENT)


def test_every_chapter_runs_and_gets_its_time():
    ran = []

    def execute(nb, log):
        assert log is False  # outputs of chapters at once would interleave
        ran.append(nb.stem)
        return float(len(ran))

    got = _execute_together([CHAPTER["06"], CHAPTER["07"], CHAPTER["09"]], execute, 2, progress=False)
    assert sorted(ran) == sorted(got) == ["06_optimization", "07_evaluation", "09_hyperparameters"]


def test_a_later_chapter_failing_first_does_not_hide_an_earlier_chapters_failure():
    seventh_failed = threading.Event()

    def execute(nb, log):
        if nb.stem.startswith("07"):
            seventh_failed.set()
            raise TinyLMError("chapter 07 failed")
        assert seventh_failed.wait(10)
        raise TinyLMError(f"chapter {nb.stem[:2]} failed")

    with pytest.raises(TinyLMError, match="chapter 06 failed"):  # failed later, reported first
        _execute_together([CHAPTER["06"], CHAPTER["07"]], execute, 2, progress=False)


def test_chapters_not_yet_started_when_one_fails_never_start():
    ran = []

    def execute(nb, log):
        ran.append(nb.stem[:2])
        raise TinyLMError(f"chapter {nb.stem[:2]} failed")

    with pytest.raises(TinyLMError, match="chapter 08 failed"):  # one worker: one at a time
        _execute_together([CHAPTER[c] for c in ("08", "06", "07")], execute, 1, progress=False)
    assert ran == ["08"]  # in the order given, not book order


def test_a_chapter_runs_in_the_chapters_folder_and_leaves_this_process_where_it_was(tmp_path, monkeypatch):
    """Chapters at once share this process: one that changed its working directory for its
    kernel (as papermill's ``cwd`` does) could start another chapter's kernel elsewhere, where
    the chapters' own modules (``import diagrams``) are not found."""
    import nbformat

    from tinylm import pipeline

    book = tmp_path / "book"
    book.mkdir()
    (book / "helper.py").write_text("ANSWER = 42\n")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("run_dir = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os, helper\nprint(os.getcwd(), helper.ANSWER)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, book / "chapter.ipynb")
    monkeypatch.setattr(pipeline, "BOOK_DIR", book)
    here, moves, chdir = os.getcwd(), [], os.chdir
    monkeypatch.setattr("os.chdir", lambda path: (moves.append(str(path)), chdir(path)))
    pipeline.execute_notebook(book / "chapter.ipynb", tmp_path / "out.ipynb", {"run_dir": "x"},
                              tmp_path / "kernel", log=False)
    assert set(moves) <= {here}  # papermill's file reads "change" to where we are, no further
    printed = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[-1].outputs[0]["text"]
    assert printed.split() == [str(book), "42"]


def _tiny_chapter(book: Path, name: str, code: str) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("run_dir = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, book / f"{name}.ipynb")
    return book / f"{name}.ipynb"


def test_a_chapter_started_ahead_finds_the_slow_modules_loaded_and_its_namespace_untouched(
        tmp_path, monkeypatch):
    """The chapters that run one at a time start their kernels while the chapter before runs
    (``KernelsAhead``). A kernel started so differs from papermill's own only in what it has
    imported: the chapter's names are the same, and the kernel is gone once the pipeline
    ends. A chapter that runs beside others gets its share of the cores as threads
    (``_cores_shared``); a kernel started ahead meanwhile, for a chapter that will run
    alone, does not."""
    import nbformat
    import psutil

    from tinylm import pipeline
    from tinylm.runtime import physical_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    book = tmp_path / "book"
    book.mkdir()
    monkeypatch.setattr(pipeline, "BOOK_DIR", book)
    probe = _tiny_chapter(book, "probe", (
        "import json, os, sys\n"
        f"print(json.dumps([os.getpid(), [m for m in {pipeline.WARM_IMPORTS!r} if m in sys.modules],"
        " sorted(n for n in dir() if not n.startswith('_')), os.environ.get('OMP_NUM_THREADS')]))"))

    def run(km=None) -> list:
        out = tmp_path / "out.ipynb"
        pipeline.execute_notebook(probe, out, {"run_dir": "x"}, tmp_path / "k", log=False, km=km)
        return json.loads(nbformat.read(out, as_version=4).cells[-1].outputs[0]["text"])

    with pipeline._cores_shared(2):  # papermill's own kernel, as for chapters run together
        _, loaded, names, threads = run()
    assert loaded == [] and threads == str(max(1, physical_cores() // 2))
    assert "OMP_NUM_THREADS" not in os.environ  # restored
    with pipeline.KernelsAhead(tmp_path) as ahead:
        with pipeline._cores_shared(2):
            ahead.start(probe)
            km = ahead.take(probe)
        assert km is not None and ahead.take(probe) is None  # taken once
        pid = km.provisioner.pid
        got_pid, got_loaded, got_names, got_threads = run(km)
        deadline = time.monotonic() + 30  # asked to shut down when its chapter ended: it exits
        while ahead.loop.run_until_complete(km.is_alive()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not ahead.loop.run_until_complete(km.is_alive())
    assert got_pid == pid and got_loaded == list(pipeline.WARM_IMPORTS) and got_names == names
    assert got_threads is None
    assert not psutil.pid_exists(pid)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice stays
    with pipeline._cores_shared(2):
        assert os.environ["OMP_NUM_THREADS"] == "3"


def test_a_kernel_started_ahead_of_a_chapter_that_never_runs_is_shut_down(tmp_path, monkeypatch):
    """The chapter before fails: the next one never runs, and its kernel does not outlive
    the pipeline."""
    import psutil
    from papermill.exceptions import PapermillExecutionError

    from tinylm import pipeline

    book = tmp_path / "book"
    book.mkdir()
    monkeypatch.setattr(pipeline, "BOOK_DIR", book)
    failing = _tiny_chapter(book, "failing", "raise RuntimeError('this chapter fails')")
    never = _tiny_chapter(book, "never", "print('never runs')")
    before = {p.pid for p in psutil.Process().children()}
    with pipeline.KernelsAhead(tmp_path) as ahead:
        ahead.start(never)
        with pytest.raises(PapermillExecutionError, match="this chapter fails"):
            # its kernel's start lets the one ahead start too (the same event loop)
            pipeline.execute_notebook(failing, tmp_path / "out.ipynb", {"run_dir": "x"},
                                      tmp_path / "k", log=False)
        ahead_kernels = [p for p in psutil.Process().children() if p.pid not in before]
        assert len(ahead_kernels) == 1 and "ipykernel" in " ".join(ahead_kernels[0].cmdline())
    gone, alive = psutil.wait_procs(ahead_kernels, timeout=10)
    assert alive == []


def test_a_worker_with_no_chapter_left_to_start_says_so_and_the_waiting_runs_through_wait():
    """The pipeline starts the next chapter's kernel then (a core is free), and waits for the
    chapters with ``KernelsAhead.wait`` so that the kernel makes progress meanwhile."""
    from concurrent.futures import Future

    ran, idle_after, waited = [], [], []

    def execute(nb, log):
        ran.append(nb.stem[:2])
        return 1.0

    def wait(future: Future):
        waited.append(future)
        return future.result()

    chapters = [CHAPTER[c] for c in ("11", "06", "08", "09", "07")]
    _execute_together(chapters, execute, 1, progress=False, wait=wait,
                      when_one_idles=lambda: idle_after.append(list(ran)))
    assert idle_after == [["11", "06", "08", "09", "07"]] and len(waited) == len(chapters)
    idle_after.clear()
    _execute_together(chapters, execute, 2, progress=False,
                      when_one_idles=lambda: idle_after.append(True))
    assert 1 <= len(idle_after) <= 2  # once per worker at most: each ends one last chapter


def test_inside_a_running_event_loop_no_kernel_starts_ahead_and_chapters_still_run(tmp_path, monkeypatch):
    """In a notebook's cell an event loop already runs: nbclient then executes on a thread of
    its own, whose loop a kernel started here would not belong to; so none starts ahead."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import nbformat

    from tinylm import pipeline

    book = tmp_path / "book"
    book.mkdir()
    monkeypatch.setattr(pipeline, "BOOK_DIR", book)
    chapter = _tiny_chapter(book, "chapter", "print(6 * 7)")

    async def in_a_cell():
        with pipeline.KernelsAhead(tmp_path) as ahead:
            ahead.start(chapter)
            assert ahead.take(chapter) is None
            with ThreadPoolExecutor(1) as pool:
                assert ahead.wait(pool.submit(lambda: 42)) == 42
            pipeline.execute_notebook(chapter, tmp_path / "out.ipynb", {"run_dir": "x"},
                                      tmp_path / "k", log=False, km=ahead.take(chapter))

    asyncio.run(in_a_cell())
    assert nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[-1].outputs[0]["text"] == "42\n"
