"""``tinylm pipeline``: the chapters, executed headless with papermill, are the pipeline.

Each chapter's ``parameters`` cell declares ``run_dir``, ``config`` and ``resume``; the
pipeline injects the run directory, the resolved configuration (as a dict) and the resume
decision, and writes the executed notebook to ``RUN/notebooks/``. The chapters call
``tinylm.stages.Run``, which skips any stage whose fingerprint is unchanged, so re-running
the pipeline after a change redoes only what the change affects.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from tinylm import errors
from tinylm.config import Config
from tinylm.errors import ConfigError, PrerequisiteError, TinyLMError

_HERE = Path(__file__).resolve().parent
#: The chapters: inside the package when installed (package data), beside it in a checkout.
BOOK_DIR = _HERE / "book" if (_HERE / "book").is_dir() else _HERE.parent / "book"
CHAPTERS = ["01_overview", "02_tokenization", "03_model", "04_data", "05_training",
            "06_optimization", "07_evaluation", "08_troubleshooting", "09_hyperparameters",
            "10_budgets", "11_scaling_out"]
#: The exit code of a chapter that fails with an error that is not a TinyLMError.
STAGE_EXIT = {"01": 2, "02": 3, "03": 4, "04": 3, "05": 4, "06": 4, "07": 5, "08": 4, "09": 4, "10": 5,
              "11": 4}
PARAMETERS = ("run_dir", "config", "resume")


def chapter_paths(selection: list[str] | None = None) -> list[Path]:
    """The chapter notebooks in order; ``selection`` holds numbers ("5") or names."""
    if selection is None:
        names = list(CHAPTERS)
    else:
        wanted = {s.strip(): _chapter_name(s.strip()) for s in selection if s.strip()}
        unknown = [s for s, name in wanted.items() if name is None]
        if unknown or not wanted:
            raise ConfigError(f"unknown chapter(s): {', '.join(unknown) or 'none given'}",
                              f"use numbers 1-{len(CHAPTERS)} or names: {', '.join(CHAPTERS)}.")
        names = [name for name in CHAPTERS if name in wanted.values()]  # book order, once each
    chosen = [BOOK_DIR / f"{name}.ipynb" for name in names]
    missing = [p.name for p in chosen if not p.is_file()]
    if missing:
        raise PrerequisiteError(f"chapter notebook(s) {', '.join(missing)} missing from {BOOK_DIR}",
                                "run the pipeline from a complete source checkout of tinylm "
                                "(git checkout -- book/) or install it with `pip install -e .`.")
    return chosen


def _chapter_name(selector: str) -> str | None:
    """The chapter a selector names: a number ("5", "05") or a name ("05_training")."""
    for name in CHAPTERS:
        if selector == name or (selector.isdigit() and int(selector) == int(name[:2])):
            return name
    return None


@contextmanager
def _environment(name: str, value: str):
    """Set an environment variable for the processes started inside, then restore it."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def check_parameters(notebook: Path, names: tuple[str, ...] = PARAMETERS) -> None:
    """Refuse to inject a name that the chapter's parameters cell does not declare."""
    import papermill

    try:
        declared = set(papermill.inspect_notebook(str(notebook)))
    except Exception as exc:  # not JSON, not a notebook
        raise ConfigError(f"chapter {notebook} cannot be read as a notebook: {exc}",
                          "restore it from the source checkout (git checkout -- book/).") from None
    unknown = sorted(set(names) - declared)
    if unknown:
        raise ConfigError(f"chapter {notebook.name} has no parameter(s) {', '.join(unknown)}",
                          f"its parameters cell declares: {', '.join(sorted(declared)) or 'nothing'}.")


def run_pipeline(cfg: Config, run_dir: Path, chapters: list[str] | None = None,
                 resume: bool | None = None, skip: tuple[str, ...] = (), progress: bool = True) -> dict:
    """Execute the chapters into ``run_dir/notebooks``; return a summary of the run."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from tinylm.stages import Run

    notebooks = chapter_paths(chapters)
    for nb in notebooks:
        check_parameters(nb)
    run_dir = Path(run_dir).resolve()
    run = Run(run_dir, cfg, progress=progress, resume=resume)
    timings = {}
    t_start = time.perf_counter()
    with run.locked():  # held from the first decision to the last chapter
        if not run.is_trained():
            resume = run.decide_resume()
            if resume:
                run.check_resume("pipeline")  # refuse before chapter 1 rebuilds anything
        for stage, folder in (("corpus", run.corpus_dir), ("tokenizer", run.tokenizer_dir)):
            if stage in skip:  # trust the existing output as if this configuration had made it
                if not folder.exists():
                    raise ConfigError(f"--skip-{stage} given but {folder} does not exist",
                                      f"run once without --skip-{stage}.")
                run.mark_current(stage, folder)
        # --fresh: the training chapter's Run.train deletes the old checkpoints only once
        # nothing can refuse any more, so a bad input found in chapter 1 keeps them
        resume = resume is not False
        out_dir = run_dir / "notebooks"
        out_dir.mkdir(parents=True, exist_ok=True)
        with _environment("TINYLM_LOCK_PID", str(os.getpid())):  # the kernels share our lock
            for nb in notebooks:
                t0 = time.perf_counter()
                if progress:
                    print(f"== chapter {nb.stem} ({time.perf_counter() - t_start:.0f} s elapsed)",
                          file=sys.stderr, flush=True)
                target = out_dir / nb.name
                try:
                    papermill.execute_notebook(
                        str(nb), str(target), kernel_name="python3", cwd=str(BOOK_DIR),
                        parameters={"run_dir": str(run_dir), "config": cfg.to_dict(), "resume": resume},
                        log_output=progress, progress_bar=False, stderr_file=None)
                except PapermillExecutionError as exc:
                    raise _chapter_error(nb, target, exc) from None
                timings[nb.stem] = round(time.perf_counter() - t0, 1)
                if progress:
                    print(f"   {nb.stem} done in {timings[nb.stem]:.1f} s", file=sys.stderr)
    return {"run_dir": str(run_dir), "chapters": timings,
            "total_seconds": round(time.perf_counter() - t_start, 1)}


def _chapter_error(nb: Path, target: Path, exc) -> TinyLMError:
    """Turn a failed cell into the error of its kind, naming chapter, cell and notebook."""
    cls = getattr(errors, exc.ename, None)
    code = cls.exit_code if isinstance(cls, type) and issubclass(cls, TinyLMError) else STAGE_EXIT[nb.name[:2]]
    message, _, remedy = str(exc.evalue).partition("\n  remedy: ")
    err = TinyLMError(f"chapter {nb.stem} failed in cell {exc.exec_count}: {exc.ename}: {message}",
                      (remedy + " " if remedy else "") + f"The partly executed notebook is {target}.")
    err.exit_code = code
    return err
