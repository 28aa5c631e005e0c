"""``tinylm pipeline``: the ten chapters, executed headless with papermill, are the pipeline.

Each chapter's ``parameters`` cell declares ``run_dir``, ``config`` and ``resume``; the
pipeline injects the run directory, the resolved configuration (as a dict) and the resume
decision, and writes the executed notebook to ``RUN/notebooks/``. The chapters call
``tinylm.stages.Run``, which skips any stage whose fingerprint is unchanged, so re-running
the pipeline after a change redoes only what the change affects.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tinylm import errors
from tinylm.config import Config
from tinylm.errors import ConfigError, PrerequisiteError, TinyLMError

_HERE = Path(__file__).resolve().parent
#: The chapters: inside the package when installed (package data), beside it in a checkout.
BOOK_DIR = _HERE / "book" if (_HERE / "book").is_dir() else _HERE.parent / "book"
CHAPTERS = ["01_overview", "02_tokenization", "03_model", "04_data", "05_training",
            "06_optimization", "07_evaluation", "08_troubleshooting", "09_hyperparameters",
            "10_budgets"]
#: The exit code of a chapter that fails with an error that is not a TinyLMError.
STAGE_EXIT = {"01": 2, "02": 3, "03": 4, "04": 3, "05": 4, "06": 4, "07": 5, "08": 4, "09": 4, "10": 5}
PARAMETERS = ("run_dir", "config", "resume")


def chapter_paths(selection: list[str] | None = None) -> list[Path]:
    """The chapter notebooks in order; ``selection`` holds numbers ("5") or names."""
    chosen = []
    for name in CHAPTERS:
        if selection is None or any(s.zfill(2) == name[:2] or s == name for s in selection):
            chosen.append(BOOK_DIR / f"{name}.ipynb")
    if selection is not None and len(chosen) != len(set(selection)):
        raise ConfigError(f"unknown chapter(s) in {selection}",
                          f"use numbers 1-10 or names: {', '.join(CHAPTERS)}.")
    missing = [p.name for p in chosen if not p.is_file()]
    if missing:
        raise PrerequisiteError(f"chapter notebook(s) {', '.join(missing)} missing from {BOOK_DIR}",
                                "run the pipeline from a complete source checkout of tinylm "
                                "(git checkout -- book/) or install it with `pip install -e .`.")
    return chosen


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
    with run.lock:  # held from the first decision to the last chapter
        if not (run.is_current("train", run.checkpoints_dir) and (run.checkpoints_dir / "final.pt").exists()):
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
        os.environ["TINYLM_LOCK_PID"] = str(os.getpid())  # the kernels share our lock
        try:
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
        finally:
            os.environ.pop("TINYLM_LOCK_PID", None)
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


def add_pipeline_parser(sub, run_options, config_flags) -> None:
    p = sub.add_parser(
        "pipeline", help="run the ten chapters headless (papermill) into a run directory",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Execute the book's chapters in order with the given configuration; the "
                    "executed notebooks land in RUN/notebooks next to every artifact.",
        epilog="""examples:
  tinylm pipeline --preset quick                   # the whole book on a tiny model, ~1 min
  tinylm pipeline --preset default                 # the default model (~3 MB, 20 epochs)
  tinylm pipeline --epochs 5 --chapters 5,7        # only training and evaluation
  tinylm pipeline --output-dir runs/default --resume

what the main values cost:
  --epochs N          time grows linearly with N; memory unchanged
  --batch-size N      memory grows linearly (activations); time per epoch about flat
  --learning-rate X   too high diverges (NaN), too low learns slowly; no time or memory cost
  --vocab-size N      bigger: fewer tokens per byte but a larger softmax (time, memory)
  --languages a,b     any of en, es, fr, de, it; each adds ~1.5 MB of text and its time
""")
    run_options(p)
    p.add_argument("--chapters", default=None, help="a subset, e.g. 1,2,5 (default: all ten)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", default=None, help="continue from checkpoints")
    mode.add_argument("--fresh", action="store_true", help="discard existing checkpoints")
    p.add_argument("--skip-corpus", action="store_true", help="reuse the existing corpus as is")
    p.add_argument("--skip-tokenizer", action="store_true", help="reuse the existing tokenizer as is")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    config_flags(p)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from tinylm.cli import config_from_args

    cfg = config_from_args(args)
    for warning in cfg.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    run_dir = Path(args.output_dir or f"runs/{cfg.name}")
    skip = tuple(s for s in ("corpus", "tokenizer") if getattr(args, f"skip_{s}"))
    resume = True if args.resume else (False if args.fresh else None)
    chapters = args.chapters.split(",") if args.chapters else None
    summary = run_pipeline(cfg, run_dir, chapters, resume, skip, progress=not args.quiet)
    print(f"\npipeline finished in {summary['total_seconds']:.0f} s")
    from tinylm.cli import _summary
    from tinylm.evaluate import training_checks
    from tinylm.stages import Run

    run = Run(run_dir, cfg, progress=False, resume=True)
    if run.metrics_path.exists():
        _summary(run, training_checks(json.loads(run.metrics_path.read_text())))
    return 0
