"""``tinylm pipeline``: the chapters, executed headless with papermill, are the pipeline.

Each chapter's ``parameters`` cell declares ``run_dir``, ``config`` and ``resume``, and its
next cell opens its run with ``chapter_run``; the pipeline injects the run directory, the
resolved configuration (as a dict) and the resume decision, and writes the executed notebook
to ``RUN/notebooks/``. The chapters call ``tinylm.stages.Run``, which skips any stage whose
fingerprint is unchanged, so re-running the pipeline after a change redoes only what the
change affects. A reader who opens a chapter leaves ``run_dir`` at None: the book's own runs.
Each chapter executed without error is stamped with a digest of the sources it ran with
(``sources_digest``), so that ``make book`` (``tinylm.book_build``) can tell a current
executed copy from an out-of-date one.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tinylm import errors
from tinylm.config import EXAMPLES_DIR, NOT_TRAINING, Config, check_resume, load_preset
from tinylm.errors import ConfigError, PrerequisiteError, TinyLMError
from tinylm.files import RunLock, adopt_parent_lock
from tinylm.progress import HEADLESS
from tinylm.runtime import physical_cores
from tinylm.stages import OWN_EXPORT, Run

if TYPE_CHECKING:
    from concurrent.futures import Future

    from jupyter_client.manager import AsyncKernelManager

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
#: Chapters that may run beside each other once the model is trained: each reads the run
#: and writes at most a stage no other of them writes (07 the samples). Chapter 10 is not
#: among them: it measures the served model's latency, which another chapter would slow.
#: Longest first (as measured in the default pipeline), so that no long one starts last.
CONCURRENT = ["11_scaling_out", "06_optimization", "08_troubleshooting", "09_hyperparameters",
              "07_evaluation"]
MAX_WORKERS = 4
#: What a chapter's run says when training is interrupted: the remedy is in the notebook.
NOTEBOOK_RESUME_HINT = ("resume = True in the chapter's parameters cell (its first code cell), "
                        "then run the chapter again")


class ChapterRun(Run):
    """A run opened by a chapter: its reader continues it from the notebook, not a shell."""

    def resume_command(self, command: str = "train") -> str:
        return NOTEBOOK_RESUME_HINT

    def keep_model(self) -> None:
        """Refuse, before any stage is rebuilt, to open a folder whose model this chapter
        would train over: one trained with other settings (or by other code or data), or an
        unfinished one, unless ``resume`` is True and a resume may make the change."""
        final = self.checkpoints_dir / "final.pt"
        if self.is_trained() or not (self.has_checkpoints() or final.exists()):
            return
        if self.resume:
            self.check_checkpoints()  # names every setting a resume may not change
            return
        held = _stamped_config(self.checkpoints_dir) or _stamped_config(self.dir, "config.json")
        differ = {k: [v, getattr(self.cfg, k, None)] for k, v in (held or {}).items()
                  if k not in NOT_TRAINING and v != getattr(self.cfg, k, None)}
        if not final.exists():
            what = "the checkpoints of an unfinished training"
        elif differ:
            what = "a model trained with other settings (" + ", ".join(
                f"{k}: {old!r} there, {new!r} here" for k, (old, new) in sorted(differ.items())) + ")"
        else:
            what = "a model that tinylm's current code or data would not make the same way"
        raise ConfigError(
            f"{self.dir} holds {what}; this chapter would train a new model over it",
            "set resume = True to continue it (only epochs and the settings that do not change "
            "the model may differ), config = {} to open the run as it is, or another run_dir "
            f"(None: the book's runs, a folder per configuration); to replace the model, delete "
            f"{self.checkpoints_dir} first.")


def chapter_run(run_dir: str | Path | None, config: dict, resume: bool) -> ChapterRun:
    """The run a chapter works on, from its parameters cell; every chapter opens it so.

    ``config`` overrides the quick preset (the pipeline passes a whole configuration).
    None, a reader's default ``run_dir``, means the book's own runs, one folder per
    configuration (``book_run_dir``): trying a setting in one chapter trains a model beside
    the others, and opening the next chapter with other settings never deletes it. With
    ``resume`` True, a configuration's new folder starts from the checkpoints of the book's
    run that differs only in settings a resume may change, so ``config = {"epochs": 6}``
    continues the three epochs already trained.

    A folder the reader names is opened as it is when ``config`` is empty (with its
    ``config.json``); a model in it is never trained over unless ``resume`` is True and only
    resumable settings differ (``ChapterRun.keep_model``). The pipeline's own ``run_dir``
    is used as it is: the pipeline holds the folder and has decided with its user.
    """
    adopt_parent_lock()  # a kernel the pipeline started shares its lock; the kernel's children do not
    if run_dir is None:
        cfg = load_preset("quick", **config)
        run_dir = book_run_dir(cfg)
        if resume:
            _start_from_earlier_run(cfg, run_dir)
        return ChapterRun(run_dir, cfg, resume=resume)
    stored = Path(run_dir) / "config.json"
    if not config and stored.is_file():
        cfg = Config.load(stored)
    else:
        cfg = load_preset("quick", **config)
    run = ChapterRun(run_dir, cfg, resume=resume)
    if not RunLock(run.dir).held_by_parent():
        run.keep_model()
    return run


def _stamped_config(folder: Path, name: str = "fingerprint.json") -> dict | None:
    """The configuration recorded in ``folder/name`` (a stage's stamp, or config.json)."""
    try:
        values = json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(values, dict) and name == "fingerprint.json":
        values = values.get("config")
    return values if isinstance(values, dict) else None


def book_runs_dir() -> Path:
    """Where the book's own runs live: ``runs/book`` beside the chapters in a source checkout,
    whatever the working directory; the user's cache folder when the chapters were installed
    as package data (an installed package is no place to write)."""
    if BOOK_DIR.parent != _HERE:
        return BOOK_DIR.parent / "runs" / "book"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinylm" / "book"


def book_run_dir(cfg: Config) -> Path:
    """The book's folder for ``cfg``: ``<preset>-<digest of the settings that change the model>``.

    Settings that change no trained model (sampling, budgets, threads) share a folder, so a
    new temperature in chapter 7 does not retrain; every other change gets a folder of its own.
    """
    training = {k: v for k, v in cfg.to_dict().items() if k not in NOT_TRAINING}
    digest = hashlib.sha256(json.dumps(training, sort_keys=True).encode()).hexdigest()[:8]
    return book_runs_dir() / f"{cfg.name}-{digest}"


def _start_from_earlier_run(cfg: Config, run_dir: Path) -> None:
    """Copy into a new ``run_dir`` the newest book run that ``cfg`` may resume (one that
    differs only in resumable settings such as ``epochs``); the earlier run stays as it is."""
    if (run_dir / "checkpoints").exists():
        return
    found = []
    for folder in run_dir.parent.glob(f"{cfg.name}-*"):
        last = folder / "checkpoints" / "last.pt"
        try:
            check_resume(Config.from_dict(json.loads((folder / "config.json").read_text())), cfg)
        except (OSError, ValueError, TinyLMError):
            continue
        if last.is_file():
            found.append((last.stat().st_mtime_ns, folder))
    if found:
        shutil.copytree(max(found)[1], run_dir, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".lock", "notebooks", "pipeline.json",
                                                      OWN_EXPORT))  # the shorter model's


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


@contextmanager
def _cores_shared(workers: int):
    """For the chapters started inside: ``OMP_NUM_THREADS``, and with it their ``threads = 0``
    (``runtime.default_threads``), set to their share of the physical cores. Two chapters
    with a thread per core each would put twice as many threads as cores to work, and every
    parallel operation would wait for a thread the other chapter holds. A value the user set
    is kept."""
    if "OMP_NUM_THREADS" in os.environ:
        yield
        return
    with _environment("OMP_NUM_THREADS", str(max(1, physical_cores() // workers))):
        yield


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
    """Execute the chapters into ``run_dir/notebooks``; return a summary of the run.

    Once the model is trained, the ``CONCURRENT`` chapters run one per physical core (at most
    ``MAX_WORKERS``): most of their cells use one core, so on two cores they take about half
    the time one after the other would.
    """
    from papermill.exceptions import PapermillExecutionError

    notebooks = chapter_paths(chapters)
    for nb in notebooks:
        check_parameters(nb)
    workers = min(MAX_WORKERS, physical_cores())
    run_dir = Path(run_dir).resolve()
    run = Run(run_dir, cfg, progress=progress, resume=resume)
    timings = {}
    t_start = time.perf_counter()
    with run.locked():  # held from the first decision to the last chapter
        if not run.is_trained():
            resume = run.decide_resume()
            if resume:
                run.check_checkpoints("pipeline")  # refuse before chapter 1 rebuilds anything
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
        parameters = {"run_dir": str(run_dir), "config": cfg.to_dict(), "resume": resume}
        shared = shared_sources_digest()  # the sources as they were when the chapters started

        def execute(nb: Path, log: bool, km: AsyncKernelManager | None = None) -> float:
            """One chapter into ``out_dir`` (on ``km``, its kernel started ahead, if given); its
            seconds, or the error that names its cell."""
            t0 = time.perf_counter()
            if progress:
                print(f"== chapter {nb.stem} ({t0 - t_start:.0f} s elapsed)", file=sys.stderr, flush=True)
            target = out_dir / nb.name
            try:
                execute_notebook(nb, target, parameters, Path(sockets) / nb.stem, log, km)
            except PapermillExecutionError as exc:
                raise _chapter_error(nb, target, exc, run.resume_command("pipeline")) from None
            _stamp(target, sources_digest(nb, shared))
            seconds = round(time.perf_counter() - t0, 1)
            if progress:
                print(f"   {nb.stem} done in {seconds:.1f} s", file=sys.stderr, flush=True)
            return seconds

        # the kernels share our lock; their sockets go to a folder of their own, not to the
        # kernels' working directory (the chapters' folder, read-only in some installs); no one
        # watches their output live, so their progress is text the executed notebook keeps
        # (tinylm.progress), and transformers' loading bars are off
        with _environment("TINYLM_LOCK_PID", str(os.getpid())), _environment(HEADLESS, "1"), \
                _environment("HF_HUB_DISABLE_PROGRESS_BARS", "1"), \
                tempfile.TemporaryDirectory(prefix="tinylm-kernels-") as sockets, \
                KernelsAhead(Path(sockets)) as ahead:
            pending = list(notebooks)
            while pending:
                together = ([nb for nb in pending if nb.stem in CONCURRENT]
                            if pending[0].stem in CONCURRENT and run.is_trained() else [])
                together.sort(key=lambda nb: CONCURRENT.index(nb.stem))
                if len(together) > 1 and workers > 1:
                    after = [nb for nb in pending if nb not in together][:1]
                    # the next chapter's kernel starts once a core has no chapter left to run
                    # (with the environment of the chapters that run alone: KernelsAhead's)
                    with _cores_shared(workers):
                        timings |= _execute_together(
                            together, execute, workers, progress, ahead.wait,
                            (lambda: ahead.start_soon(after[0])) if after else None)
                else:
                    together = pending[:1]
                    km = ahead.take(together[0])
                    if len(pending) > 1 and pending[1].stem not in CONCURRENT:
                        ahead.start(pending[1])  # while this chapter runs, mostly on one core
                    timings[together[0].stem] = execute(together[0], progress, km)
                pending = [nb for nb in pending if nb not in together]
    timings = {nb.stem: timings[nb.stem] for nb in notebooks}  # book order
    return {"run_dir": str(run_dir), "chapters": timings,
            "total_seconds": round(time.perf_counter() - t_start, 1)}


def execute_notebook(nb: Path, target: Path, parameters: dict, sockets: Path, log: bool,
                     km: AsyncKernelManager | None = None) -> None:
    """Execute one chapter with papermill into ``target``, its kernel in the chapters' folder,
    on ``km`` if given (a kernel ``KernelsAhead`` started, asked to shut down at the end).

    The kernel gets its working directory from nbclient (``resources``), not from papermill's
    ``cwd``, which changes this whole process's directory while the chapter runs: with two
    chapters at once, one ending put the other's kernel back where the pipeline started.
    Local sockets, a prefix per chapter: a TCP kernel warns, for every chapter, that it is
    unencrypted (which reads like a security problem and is not one here), and two kernels
    started at once must not pick the same socket names.
    """
    import papermill

    papermill.execute_notebook(str(nb), str(target), kernel_name="python3", parameters=parameters,
                               engine_name=_engine(), km=km, log_output=log, progress_bar=False,
                               stderr_file=None, config=_kernel_config(sockets),
                               resources={"metadata": {"path": str(BOOK_DIR)}})


def _kernel_config(sockets: Path):
    """A kernel's settings: local sockets named with the prefix ``sockets``."""
    from traitlets.config import Config as KernelConfig

    return KernelConfig({"KernelManager": {"transport": "ipc", "ip": str(sockets)}})


@functools.cache
def _engine() -> str:
    """The name of papermill's nbclient engine taught to use a kernel started ahead (``km``).
    papermill would leave such a kernel running and its client open; this engine closes the
    client and asks the kernel to shut down, without waiting the while a kernel that loaded
    PyTorch takes to exit: the next chapter starts meanwhile, and ``KernelsAhead`` makes sure
    of the exit at the end. A kernel papermill starts itself it shuts down as it always does."""
    from jupyter_core.utils import run_sync
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.log import logger

    class StartedAhead(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, input_path=None, km=None,
                                     **kwargs):
            client = PapermillNotebookClient(nb_man, km=km, kernel_name=kernel_name, log=logger,
                                             log_output=log_output, stdout_file=stdout_file,
                                             stderr_file=stderr_file, startup_timeout=start_timeout,
                                             **kwargs)
            try:
                return client.execute()
            finally:
                if km is not None:  # papermill closed its own kernel and client already
                    if client.kc is not None:
                        client.kc.stop_channels()
                    run_sync(km.request_shutdown)()

    papermill_engines.register("tinylm", StartedAhead)
    return "tinylm"


#: What a kernel started ahead loads before its chapter: the modules every chapter imports
#: and that take seconds to load (PyTorch most of them).
WARM_IMPORTS = ("torch", "tinylm.plots", "tinylm.stages", "tinylm.train")


class KernelsAhead:
    """Kernels started, with ``WARM_IMPORTS`` loaded, while the chapter before theirs runs.

    Starting a kernel and loading PyTorch and matplotlib costs a chapter seconds of one
    core, and most cells of the chapters that run one at a time leave the second core
    idle, as do the last of the chapters that run together. A kernel manager belongs to the
    event loop that started it, so the kernels start on this thread's loop (the one nbclient
    runs on while a chapter executes here, and ``wait`` runs while chapters execute on other
    threads) and their chapters execute on this thread. On leaving the ``with`` block every
    kernel it started has exited: those taken were asked to when their chapter ended, those
    never taken (a chapter before theirs failed) are shut down. Called where an event loop
    already runs (a notebook's cell), nbclient executes on a thread of its own, and no kernel
    starts ahead.
    """

    def __init__(self, sockets: Path):
        import asyncio

        from jupyter_core.utils import ensure_event_loop

        self.sockets = sockets
        self.env = dict(os.environ)  # not what the chapters running together are given
        try:
            asyncio.get_running_loop()
            self.loop = None
        except RuntimeError:  # none runs here: nbclient will run this thread's own
            self.loop = ensure_event_loop()
        self.starting: dict[Path, Any] = {}  # chapter -> the task that starts its kernel
        self.taken: list[AsyncKernelManager] = []  # their managers, once handed to a chapter
        self.closed = False

    def start(self, nb: Path) -> None:
        """Start ``nb``'s kernel; it makes progress whenever a chapter executes on this thread
        (or ``wait`` waits here)."""
        if nb not in self.starting and not self.closed and self.loop is not None:
            self.starting[nb] = self.loop.create_task(self._start(self.sockets / nb.stem))

    def start_soon(self, nb: Path) -> None:
        """``start(nb)``, from any thread: on this thread, as soon as its loop runs."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.start, nb)

    def wait(self, future: Future) -> Any:
        """The result of ``future`` (another thread's work), the kernels starting meanwhile."""
        import asyncio

        if self.loop is None:
            return future.result()
        return self.loop.run_until_complete(asyncio.wrap_future(future, loop=self.loop))

    def take(self, nb: Path) -> AsyncKernelManager | None:
        """``nb``'s kernel manager once its kernel is ready, or None: not started, or the start
        failed (papermill then starts a kernel of its own and reports any problem)."""
        task = self.starting.pop(nb, None)
        if task is None:
            return None
        try:
            km = self.loop.run_until_complete(task)
        except Exception:  # the chapter's own start reports it
            return None
        self.taken.append(km)
        return km

    async def _start(self, sockets: Path) -> AsyncKernelManager:
        from jupyter_client.manager import AsyncKernelManager

        km = AsyncKernelManager(kernel_name="python3", config=_kernel_config(sockets))
        # as nbclient starts a kernel: in the chapters' folder, no history file
        await km.start_kernel(cwd=str(BOOK_DIR), env=self.env,
                              extra_arguments=["--HistoryManager.hist_file=:memory:"])
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            # __import__ binds no name: the chapter's namespace stays empty, sys.modules fills
            await kc.execute_interactive("".join(f"__import__({m!r})\n" for m in WARM_IMPORTS),
                                         silent=True, store_history=False, timeout=120)
        except BaseException:
            await km.shutdown_kernel(now=True)
            raise
        finally:
            kc.stop_channels()
        return km

    def __enter__(self) -> "KernelsAhead":
        return self

    def __exit__(self, *exc) -> None:
        import asyncio

        self.closed = True  # a start_soon still queued starts nothing
        if self.loop is None:
            return
        if exc[0] is not None:  # what an interrupted chapter left on the loop stays undone
            for task in asyncio.all_tasks(self.loop) - set(self.starting.values()):
                task.cancel()
        for nb in list(self.starting):  # kernels of chapters that never ran
            self.take(nb)
        for km in self.taken:  # each asked to shut down once its chapter ended, if it ran
            self.loop.run_until_complete(self._stop(km))

    @staticmethod
    async def _stop(km: AsyncKernelManager) -> None:
        if await km.is_alive():
            await km.shutdown_kernel(now=True)
        else:
            await km.cleanup_resources()


def shared_sources_digest() -> str:
    """A digest of what every chapter's outputs depend on besides the chapter itself: the
    library, the chapters' helper modules, the presets and the committed results they show."""
    files = [*_HERE.rglob("*.py"), *BOOK_DIR.glob("*.py"), *(BOOK_DIR / "reference").glob("*.json"),
             *EXAMPLES_DIR.glob("*.toml"), *(BOOK_DIR.parent / "benchmarks").rglob("*.json")]
    digest = hashlib.sha256()
    for path in sorted(set(files)):
        digest.update(f"{path.relative_to(path.parents[1])}\0".encode() + path.read_bytes())
    return digest.hexdigest()


def sources_digest(chapter: Path, shared: str | None = None) -> str:
    """The digest of the sources ``chapter`` executes with (itself and the shared ones), which
    the pipeline stamps on its executed copy: a copy with another stamp is out of date."""
    shared = shared or shared_sources_digest()
    return hashlib.sha256(shared.encode() + chapter.read_bytes()).hexdigest()


def _stamp(executed: Path, digest: str) -> None:
    """Record on an executed chapter the digest of the sources it ran with."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    nb.metadata["tinylm"] = {"sources": digest}
    nbformat.write(nb, executed)


def chapter_is_current(executed: Path, chapter: Path, parameters: dict,
                       shared: str | None = None) -> bool:
    """True when ``executed`` is a complete run of ``chapter`` with these injected
    ``parameters`` (those named: others are not compared) and the sources as they are now."""
    import nbformat

    try:
        meta = nbformat.read(executed, as_version=4).metadata
    except (OSError, ValueError):
        return False
    injected = meta.get("papermill", {}).get("parameters", {})
    return (meta.get("tinylm", {}).get("sources") == sources_digest(chapter, shared)
            and all(injected.get(k) == v for k, v in parameters.items()))


def _execute_together(notebooks: list[Path], execute: Callable[[Path, bool], float], workers: int,
                      progress: bool, wait: Callable[[Future], Any] | None = None,
                      when_one_idles: Callable[[], None] | None = None) -> dict:
    """Run ``execute(nb, log=False)`` for several chapters at once, started in the order
    given (their cell outputs, which would interleave, go to the executed notebooks only). A
    failure stops the chapters not yet started and, once the running ones end, is raised: the
    first in book order. ``wait(future)`` waits for a chapter (``future.result()`` if None);
    ``when_one_idles()`` is called, from a worker, each time a chapter ends with none left to
    start."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    if progress:
        print(f"== chapters {', '.join(sorted(nb.stem[:2] for nb in notebooks))}: {workers} at a time, "
              "their output in the executed notebooks", file=sys.stderr, flush=True)
    stop, started = threading.Event(), []

    def guarded(nb: Path) -> float | None:
        if stop.is_set():  # a chapter failed (or Ctrl-C): start no other
            return None
        started.append(nb)
        try:
            return execute(nb, False)
        except BaseException:
            stop.set()
            raise
        finally:
            if when_one_idles and len(started) == len(notebooks):  # this worker has nothing left
                when_one_idles()

    timings, failed = {}, None
    with ThreadPoolExecutor(workers) as pool:
        futures = {nb: pool.submit(guarded, nb) for nb in notebooks}
        try:
            for nb in sorted(futures, key=lambda nb: nb.stem):  # book order
                try:
                    seconds = wait(futures[nb]) if wait else futures[nb].result()
                except TinyLMError as exc:
                    failed = failed or exc
                    continue
                if seconds is not None:
                    timings[nb.stem] = seconds
        except BaseException:  # Ctrl-C while waiting: the running chapters end, no other starts
            stop.set()
            raise
    if failed is not None:
        raise failed
    return timings


def _chapter_error(nb: Path, target: Path, exc, resume_command: str) -> TinyLMError:
    """Turn a failed cell into the error of its kind, naming chapter, cell and notebook.

    An interrupted chapter's remedy is the notebook's (``resume = True``); here the pipeline
    is what continues the run, so its command replaces it.
    """
    cls = getattr(errors, exc.ename, None)
    code = cls.exit_code if isinstance(cls, type) and issubclass(cls, TinyLMError) else STAGE_EXIT[nb.name[:2]]
    message, _, remedy = str(exc.evalue).partition("\n  remedy: ")
    if cls is errors.Interrupted:
        remedy = f"resume with: {resume_command}"
    err = TinyLMError(f"chapter {nb.stem} failed in cell {exc.exec_count}: {exc.ename}: {message}",
                      (remedy + " " if remedy else "") + f"The partly executed notebook is {target}.")
    err.exit_code = code
    return err
