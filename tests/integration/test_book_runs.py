"""A reader exploring the book never destroys work.

Chapters opened without a ``run_dir`` (a reader in Jupyter) share the book's runs folder,
one run per configuration: a chapter with other settings trains beside an earlier run and
never deletes or retrains it. The scratch folders of the demonstrations outlive "Run All",
so a thing to try can rerun a demo. An interrupted chapter says how to continue it from the
notebook, and the pipeline says how to continue it from the shell.

The chapter is executed with nbclient from a temporary copy of the package and the book, so
that the book's runs folder, found from the package, is the copy's.
"""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tinylm import pipeline
from tinylm import train as train_module
from tinylm.checkpoint import load_checkpoint
from tinylm.errors import Interrupted
from tinylm.pipeline import NOTEBOOK_RESUME_HINT, book_run_dir, chapter_run

ROOT = pipeline.BOOK_DIR.parent
TINY = dict(bytes_per_language=30_000, vocab_size=512, n_layer=1, n_embd=32, n_head=2,
            block_size=32, batch_size=4, epochs=1, warmup_steps=20, threads=1)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and its modification time."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """A copy of the package, the presets and the book; this process's chapters use it too."""
    copy = tmp_path / "tinylm-checkout"
    skip = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")
    for folder in ("tinylm", "book", "examples"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=skip)
    monkeypatch.setattr(pipeline, "BOOK_DIR", copy / "book")
    return copy


def execute_chapter(checkout: Path, name: str, extra_cell: str) -> nbformat.NotebookNode:
    """Run All of one chapter with its committed parameters, then ``extra_cell``, as a reader
    would in Jupyter (the kernel started in ``book/``, importing the copy's package)."""
    nb = nbformat.read(checkout / "book" / f"{name}.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(extra_cell))
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    NotebookClient(nb, timeout=600, kernel_name="python3").execute(cwd=str(checkout / "book"), env=env)
    return nb


def test_a_chapter_with_other_settings_keeps_the_earlier_run(checkout):
    book_runs = checkout / "runs" / "book"
    earlier = chapter_run(None, TINY, False)  # chapter 5 with config = TINY, a small model
    earlier.train()
    assert earlier.dir.parent == book_runs
    before = snapshot(earlier.dir)
    assert "checkpoints/final.pt" in before

    # chapter 6 opened next with config = {}; afterwards a thing to try reruns a demo
    nb = execute_chapter(checkout, "06_optimization",
                         "assert tmp.is_dir(), 'the scratch folder is gone'\nprint(run.dir)")
    printed = nb.cells[-1].outputs[0]["text"].strip()

    assert snapshot(earlier.dir) == before  # nothing removed, rewritten or retrained
    assert Path(printed) == book_run_dir(chapter_run(None, {}, False).cfg) != earlier.dir
    assert (Path(printed) / "checkpoints" / "final.pt").is_file()
    assert Path(printed).parent == book_runs


def test_more_epochs_with_resume_continue_the_book_run_beside_it(checkout):
    shorter = chapter_run(None, TINY, False)
    shorter.train()
    before = snapshot(shorter.dir)

    longer = chapter_run(None, {**TINY, "epochs": 2}, True)
    metrics = longer.train()

    assert longer.dir != shorter.dir and snapshot(shorter.dir) == before
    assert metrics["resumed"][0]["changed"] == {"epochs": [1, 2]}
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    first = shorter.train()["history"][0]
    assert metrics["history"][0]["val_loss"] == first["val_loss"]  # continued, not retrained
    # a new configuration without resume starts from scratch, beside the others
    fresh = chapter_run(None, {**TINY, "epochs": 3}, False)
    assert not fresh.has_checkpoints()


def test_an_interrupted_chapter_run_says_how_to_continue_it_in_the_notebook(checkout, monkeypatch):
    real_lr_at = train_module.lr_at

    def lr_at(step, *args):
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)  # Jupyter's "interrupt the kernel"
        return real_lr_at(step, *args)

    run = chapter_run(None, TINY, False)
    with monkeypatch.context() as patch, pytest.raises(Interrupted) as err:
        patch.setattr(train_module, "lr_at", lr_at)
        run.train()
    assert run.dir.is_relative_to(checkout)
    assert err.value.remedy == f"resume with: {NOTEBOOK_RESUME_HINT}"
    assert "--resume" not in err.value.remedy and "resume = True" in err.value.remedy
    assert load_checkpoint(run.checkpoints_dir / "last.pt")["step"] == 6

    metrics = chapter_run(None, TINY, True).train()  # what the hint says to do
    assert metrics["status"] == "complete"


def test_an_interrupted_chapter_in_the_pipeline_gives_the_pipeline_command(tmp_path):
    class Failed:  # what papermill reports for a cell that raised
        ename, exec_count = "Interrupted", 12
        evalue = f"SIGINT received: saved checkpoint\n  remedy: resume with: {NOTEBOOK_RESUME_HINT}"

    command = "tinylm pipeline --preset quick --output-dir runs/quick --resume"
    err = pipeline._chapter_error(Path("05_training.ipynb"), tmp_path / "05_training.ipynb",
                                  Failed(), command)
    assert err.exit_code == 130
    assert err.remedy.startswith(f"resume with: {command}") and "resume = True" not in err.remedy
    assert "chapter 05_training failed in cell 12: Interrupted: SIGINT received" in err.message
