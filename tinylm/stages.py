"""The stages of a run, each reading and writing files in one run directory.

``Run(run_dir, cfg)`` knows the run directory's layout (ARCHITECTURE.md) and builds each
artifact on demand:
``run.corpus()``, ``run.tokenizer()``, ``run.tokens()``, ``run.train()``, ``run.samples()``,
``run.budgets()``. Asking for a later stage builds the earlier ones first, so a chapter
opened alone in Jupyter gets what it needs. Each stage writes a ``fingerprint.json`` of the
settings, inputs and library code that made it; when they are unchanged the stage is skipped.
"""
from __future__ import annotations

import ast
import errno
import functools
import hashlib
import json
import shlex
import shutil
import socket
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from tinylm import distributed
from tinylm.budget import REQUESTS, check_budgets, measure_inference
from tinylm.checkpoint import digest_path, load_model, load_resume_state
from tinylm.config import (CORPUS_KEYS, NOT_TRAINING, RESUMABLE_CHANGES, Config, check_resume,
                           command_flags)
from tinylm.corpus import CorpusStats, read_corpus, write_corpus
from tinylm.errors import (CheckpointError, ConfigError, PrerequisiteError, TinyLMError,
                           TokenizerError, TrainingError)
from tinylm.files import RunLock, probe_writable, sha256_file, write_json
from tinylm.runtime import resolve_device, resolve_dtype

#: The files each stage writes; a stage missing one is not fresh, whatever its fingerprint.
OUTPUTS = {"corpus": ("train.txt", "val.txt", "stats.json"), "tokenizer": ("tokenizer.json",),
           "tokens": ("train.bin", "val.bin", "meta.json"), "train": ("final.pt",)}
#: The one folder inside a run that an export may write: the run's own (chapter 10's).
OWN_EXPORT = "hf"
#: The checkpoints a training writes, by the names that choose them (--checkpoint).
CHECKPOINTS = ("final", "best", "last")
#: The modules whose code decides each stage's output. Their code is part of the stage's
#: fingerprint, so an updated tinylm rebuilds what its changes affect (and, through the chained
#: fingerprints, every later stage) instead of serving a model an older version made. Their
#: comments and docstrings are not (``code_digest``), nor is the version number: neither
#: changes an output, and a change the version announces shows in the code.
STAGE_CODE = {"corpus": ("corpus",), "tokenizer": ("tokenizer",), "tokens": ("tokenizer",),
              "train": ("data", "distributed", "model", "runtime", "train")}
#: Where the package's modules are, for ``code_digest``.
SOURCE_DIR = Path(__file__).resolve().parent


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def code_digest(stage: str) -> str:
    """A digest of the code of the modules that decide ``stage``'s output (``STAGE_CODE``):
    of their syntax trees, so that fixing a comment or a docstring rebuilds nothing."""
    files = [SOURCE_DIR / f"{m}.py" for m in STAGE_CODE[stage]]
    return _digest([_code_digest(str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files])


@functools.lru_cache(maxsize=32)
def _code_digest(path: str, mtime_ns: int, size: int) -> str:
    """A module's syntax tree without its docstrings (a file that changes gets a new key)."""
    tree = ast.parse(Path(path).read_bytes(), filename=path)
    return hashlib.sha256(repr(_code(tree)).encode()).hexdigest()


def _code(node: Any) -> Any:
    """A syntax tree as nested tuples of node types and set fields, docstrings left out: no
    comments, line numbers or layout, and no empty fields, which newer Pythons add."""
    if isinstance(node, list):
        return [_code(n) for n in node]
    if not isinstance(node, ast.AST):
        return node  # a constant, or a name
    documented = isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
    docstring = documented and ast.get_docstring(node, clean=False) is not None
    fields = []
    for name, value in ast.iter_fields(node):
        if name == "body" and docstring:
            value = value[1:]
        if value is not None and value != []:
            fields.append((name, _code(value)))
    return (type(node).__name__, *fields)


def _phase(title: str, progress: bool) -> float:
    if progress:
        print(f"== {title}", file=sys.stderr, flush=True)
    return time.perf_counter()


def _done(title: str, t0: float, progress: bool) -> None:
    if progress:
        print(f"   {title} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


class Run:
    """One run directory and the configuration that fills it.

    ``resume``: True continues from existing checkpoints, False discards them and starts
    fresh, None (the default) refuses to touch them (the command line asks on a terminal
    first). Making a ``Run`` touches no file: the folder is checked and locked by the first
    stage that writes (``with run.locked():``).
    """

    def __init__(self, run_dir: Path | str, cfg: Config, *, progress: bool = True,
                 resume: bool | None = None) -> None:
        self.dir = Path(run_dir)
        self.cfg = cfg.validate()
        self.progress = progress
        self.resume = resume
        self._lock = RunLock(self.dir)
        self._writable = False

    @contextmanager
    def locked(self):
        """Hold the run directory's lock (re-entrant), after checking it can be written."""
        if not self._writable:
            self._check_writable()
            self._writable = True
        with self._lock:
            yield self

    # ------------------------------------------------------------ layout
    corpus_dir = property(lambda self: self.dir / "corpus")
    tokenizer_dir = property(lambda self: self.dir / "tokenizer")
    tokens_dir = property(lambda self: self.dir / "tokens")
    checkpoints_dir = property(lambda self: self.dir / "checkpoints")
    metrics_path = property(lambda self: self.dir / "training_metrics.json")
    samples_path = property(lambda self: self.dir / "samples.json")
    budgets_path = property(lambda self: self.dir / "budgets.json")

    def _check_writable(self) -> None:
        blocker = next((p for p in (self.dir, *self.dir.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            where = "is" if blocker == self.dir else f"cannot be created: {blocker} is"
            raise PrerequisiteError(f"output directory {self.dir} {where} a file, not a folder",
                                    "choose another --output-dir (a folder, or a path that does "
                                    "not exist yet).")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe_writable(self.dir)
        except OSError as exc:
            raise PrerequisiteError(f"output directory {self.dir} is not writable ({exc.strerror})",
                                    "choose another --output-dir or fix its permissions.") from None

    def _require_disk(self, need_bytes: float, what: str, reclaim: float = 0) -> None:
        """Refuse to start a stage that would run out of disk (``reclaim``: bytes it deletes)."""
        free = shutil.disk_usage(self.dir).free + reclaim
        if free < need_bytes:
            raise PrerequisiteError(
                f"not enough free disk for {what}: {free / 2**20:.1f} MB free, about "
                f"{need_bytes / 2**20:.1f} MB needed in {self.dir}",
                "free some space or choose another --output-dir; nothing was changed.")

    # ------------------------------------------------------------ fingerprints
    def fingerprint(self, stage: str) -> str:
        """A digest of everything that determines ``stage``'s output: its settings, its
        inputs (the earlier stage's fingerprint, your corpus files) and tinylm's code for it."""
        cfg = self.cfg.to_dict()
        if stage == "corpus":
            inputs = {k: cfg[k] for k in CORPUS_KEYS}
            if self.cfg.corpus_path:
                inputs["files"] = _files_digest(Path(self.cfg.corpus_path))
        elif stage == "tokenizer":
            inputs = [self.fingerprint("corpus"), cfg["vocab_size"]]
        elif stage == "tokens":
            inputs = [self.fingerprint("tokenizer")]
        elif stage == "train":
            inputs = [self.fingerprint("tokens"), {k: v for k, v in cfg.items() if k not in NOT_TRAINING}]
        else:
            raise ValueError(stage)
        return _digest([inputs, code_digest(stage)])

    def is_current(self, stage: str, folder: Path) -> bool:
        """True when ``stage``'s outputs exist and were made from the current inputs."""
        if not all((folder / name).is_file() for name in OUTPUTS.get(stage, ())):
            return False
        stamp = _stamped(folder)
        if stamp is None or stamp["fingerprint"] != self.fingerprint(stage):
            return False
        # training rewrites final.pt only at its end: the stamp names the very file it vouches for
        return stage != "train" or [stamp.get("final_sha256")] == _final_digests(folder)

    def mark_current(self, stage: str, folder: Path, fingerprint: str | None = None) -> None:
        """Stamp ``folder`` as ``stage``'s output made from ``fingerprint`` (default: now's)."""
        stamp = {"stage": stage, "fingerprint": fingerprint or self.fingerprint(stage),
                 "code": code_digest(stage), "config": self.cfg.to_dict()}
        if stage == "train":
            stamp["final_sha256"] = (_final_digests(folder) or [None])[0]
        write_json(folder / "fingerprint.json", stamp)

    @contextmanager
    def rebuilding(self, stage: str, folder: Path, made_from: str | None = None):
        """Remove ``stage``'s stamp, build it, stamp it: a build that stops half-way (killed,
        disk full) leaves outputs without a stamp, which are never taken as current, for this
        configuration or any other. A full disk is reported with what to do. ``made_from``: the
        fingerprint taken before the stage read its inputs, if it read them before this."""
        (folder / "fingerprint.json").unlink(missing_ok=True)
        if made_from is None:
            made_from = self.fingerprint(stage)  # before: corpus files edited meanwhile are not it
        try:
            yield
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise PrerequisiteError(
                f"the disk filled up while writing the {stage} stage in {folder} "
                f"({exc.strerror}); its half-written files will be rebuilt, never used",
                "free some space or choose another --output-dir, then run the same command "
                "again.") from None
        self.mark_current(stage, folder, made_from)

    # ------------------------------------------------------------ stages
    def corpus(self):
        """The cleaned train/val text and its statistics (``corpus/``)."""
        if self.is_current("corpus", self.corpus_dir):
            return CorpusStats.load(self.corpus_dir / "stats.json")
        t0 = _phase("corpus", self.progress)
        with self.locked():
            self._require_disk(3 * self.cfg.bytes_per_language * len(self.cfg.languages), "the corpus")
            made_from = self.fingerprint("corpus")
            documents = read_corpus(self.cfg, progress=self.progress)  # refusals touch nothing
            with self.rebuilding("corpus", self.corpus_dir, made_from):
                stats = write_corpus(self.cfg, documents, self.corpus_dir, progress=self.progress)
            self.cfg.save(self.dir / "config.json")
        _done("corpus", t0, self.progress)
        return stats

    def tokenizer(self):
        """The byte-level BPE tokenizer trained on the training split (``tokenizer/``)."""
        from tinylm.tokenizer import load_tokenizer, train_tokenizer  # numpy: once a stage runs

        if self.is_current("tokenizer", self.tokenizer_dir):
            return load_tokenizer(self.tokenizer_dir / "tokenizer.json")
        self.corpus()
        t0 = _phase("tokenizer", self.progress)
        with self.locked():
            with self.rebuilding("tokenizer", self.tokenizer_dir):
                tok = train_tokenizer(self.corpus_dir, self.cfg.vocab_size, self.cfg.languages,
                                      self.tokenizer_dir, progress=self.progress)
        _done("tokenizer", t0, self.progress)
        return tok

    def tokens(self) -> dict:
        """Both splits encoded to uint16 token files, and their ``meta.json``."""
        from tinylm.data import load_meta  # torch: once a stage runs
        from tinylm.tokenizer import encode_corpus  # numpy: once a stage runs

        if self.is_current("tokens", self.tokens_dir):
            return load_meta(self.tokens_dir)
        tok = self.tokenizer()
        t0 = _phase("tokens", self.progress)
        with self.locked():
            self._require_disk(2 * self.cfg.bytes_per_language * len(self.cfg.languages),
                               "the token files")
            with self.rebuilding("tokens", self.tokens_dir):
                meta = encode_corpus(tok, self.corpus_dir, self.tokens_dir, progress=self.progress)
        _done("tokens", t0, self.progress)
        return meta

    def is_trained(self) -> bool:
        """True when ``final.pt`` exists and was trained with the current settings and data."""
        return (self.checkpoints_dir / "final.pt").exists() and self.is_current("train", self.checkpoints_dir)

    def has_checkpoints(self) -> bool:
        """True when an earlier training left checkpoints to resume from."""
        return any((self.checkpoints_dir / n).exists() for n in ("last.pt", "best.pt"))

    def train(self) -> dict:
        """Train (or resume, or skip if done) and return ``training_metrics.json``'s content.

        Everything that could refuse (resume decision, changed settings, disk, too little
        data) is checked before anything is rebuilt or deleted, so a refused run leaves the
        existing checkpoints, tokenizer and token files as they were.

        Training runs in this process. In a process group (``tinylm.distributed``, started by
        the ``tinylm`` command), every process runs this method: rank 0 decides, builds and
        writes as a single process would; the others wait for its decision, train, and write
        nothing. This method never starts processes: with ``nproc > 1`` outside a process
        group it refuses, naming the command that starts them.
        """
        from tinylm.train import Trainer  # torch: once a stage runs

        if self.cfg.nproc > 1 and not distributed.is_initialized() and not self.is_trained():
            raise ConfigError(f"nproc={self.cfg.nproc}: training in {self.cfg.nproc} processes is "
                              "started by the tinylm command, not by run.train()",
                              f"train this run from a terminal: tinylm train --nproc "
                              f"{self.cfg.nproc} --output-dir {self.dir} with its other settings "
                              "(or tinylm pipeline --nproc N), then open it again; or set nproc "
                              "to 1 to train here.")
        master = distributed.is_master()
        with self.locked() if master else nullcontext():
            resume = distributed.decided_by_rank0(self.prepare_training)
            if resume is None:  # trained already, with these settings
                return json.loads(self.metrics_path.read_text())
            if not master and not self.is_current("tokens", self.tokens_dir):
                raise PrerequisiteError(
                    f"{self.tokens_dir} on {socket.gethostname()} does not hold the token files "
                    "that rank 0 built", "on several machines, share the run directory (NFS) or "
                    "copy its corpus/, tokenizer/ and tokens/ to every machine first.")
            world = distributed.world_size()
            t0 = _phase("training" + (f" in {world} processes" if world > 1 else ""), self.progress)
            # last.pt, else best.pt, read onto the CPU: the random generators' states must be
            # CPU tensors, and the trainer copies the weights to its device itself
            state = load_resume_state(self.checkpoints_dir, quiet=not master)[0] if resume else None
            trainer = Trainer(self.cfg, self.tokens_dir, team=distributed.Team(self.dir),
                              resume_from=state, progress=self.progress,
                              tokenizer_sha256=sha256_file(self.tokenizer_dir / "tokenizer.json"),
                              resume_hint=self.resume_command())
            if master:  # only now, when nothing can refuse any more
                self._forget_model(fresh=resume is False)
                self.cfg.save(self.dir / "config.json")
            metrics = trainer.fit()
            if master:
                self.mark_current("train", self.checkpoints_dir)
        _done("training", t0, self.progress)
        return metrics

    def _forget_model(self, fresh: bool) -> None:
        """Before training changes the model, remove what the old one produced (its samples,
        budgets and loss plot) and, starting fresh, the old model itself: its checkpoints,
        metrics and its export ``RUN/hf``. Only tinylm's own files: the export only when it
        is one (its config.json names a tinylm version)."""
        for path in (self.samples_path, self.budgets_path, self.dir / "loss_curves.png"):
            path.unlink(missing_ok=True)
        if not fresh:
            return
        if self.checkpoints_dir.exists():
            shutil.rmtree(self.checkpoints_dir)
        self.metrics_path.unlink(missing_ok=True)
        export = self.dir / OWN_EXPORT
        try:
            ours = "tinylm_version" in json.loads((export / "config.json").read_text())
        except (OSError, ValueError, TypeError):
            ours = False
        if ours and not export.is_symlink():
            shutil.rmtree(export)

    def prepare_training(self) -> bool | None:
        """None when the run is trained already; else, once the resume rule and the disk
        allow it and the earlier stages are built, whether to resume."""
        import torch  # torch: once a stage runs

        from tinylm.model import GPT, GPTConfig  # torch: once a stage runs

        if self.is_trained():
            return None
        resolve_dtype(self.cfg.dtype, resolve_device(self.cfg.device))  # a GPU asked for is here
        resume = self.decide_resume()
        if resume:
            self.check_checkpoints()
        self.tokenizer()  # its file's checksum goes into every checkpoint
        self.tokens()
        with torch.device("meta"):  # the model's own count, without allocating its weights
            n_params = GPT(GPTConfig.from_config(self.cfg)).num_params()
        old = _size(self.checkpoints_dir) if resume is False else 0
        self._require_disk(4 * 3 * 4 * n_params, "the checkpoints", reclaim=old)
        return resume

    def lock_holder(self) -> str:
        """The pid in the run's lock while it is held: this process's, or that of the parent
        it shares the lock with; processes it starts share it by naming this pid."""
        return self._lock.path.read_text().split()[0]

    def resume_command(self, command: str = "train") -> str:
        """The exact command line that continues this run with this configuration."""
        return shlex.join(["tinylm", command, *command_flags(self.cfg), "--output-dir",
                           str(self.dir), "--resume"])

    def check_checkpoints(self, command: str = "train") -> None:
        """Refuse, before any stage is rebuilt, to resume with other model or data settings.

        Compares this configuration with the one stored in the checkpoint (naming every
        setting that may not change), and each earlier stage's stamped fingerprint with the
        current one (catching corpus files that changed under the same settings).
        """
        state, _ = load_resume_state(self.checkpoints_dir, quiet=True)
        old = Config.from_dict(json.loads(state["config"]))
        kept = old.replace(**{k: getattr(self.cfg, k) for k in RESUMABLE_CHANGES})
        original = shlex.join(["tinylm", command, *command_flags(kept), "--output-dir",
                               str(self.dir), "--resume"])
        check_resume(old, self.cfg, f"resume with the original settings ({original}), or start "
                                    "fresh with --fresh (or in a new --output-dir).")
        for stage, folder in (("corpus", self.corpus_dir), ("tokenizer", self.tokenizer_dir),
                              ("tokens", self.tokens_dir)):
            stamped = _stamped(folder)
            if stamped is not None and stamped["fingerprint"] != self.fingerprint(stage):
                restore = "restore the original corpus files"
                if stamped.get("code") != code_digest(stage):  # none: made before stamps had it
                    why = f"tinylm's code for the {stage} stage changed (an update of tinylm)"
                    restore = "resume with the tinylm version that made the checkpoint"
                elif stage == "corpus" and self.cfg.corpus_path:
                    why = f"the files under corpus_path={self.cfg.corpus_path} changed"
                else:
                    why = f"the inputs of the {stage} stage changed"
                raise TrainingError(f"cannot resume: {why} since the checkpoint was made, so the "
                                    f"{stage} stage would be rebuilt and no longer match it",
                                    f"{restore}, or start fresh with --fresh (or in a new "
                                    "--output-dir).")

    def decide_resume(self) -> bool:
        """The rule for existing checkpoints: resume or start fresh as ``resume`` says, and
        refuse to guess when it says nothing (``None``)."""
        if not self.has_checkpoints():
            return False
        if self.resume is not None:
            return self.resume
        raise TinyLMError(f"{self.checkpoints_dir} holds checkpoints of an earlier run",
                          "pass --resume to continue it, --fresh to discard it, or use "
                          "another --output-dir.")

    def model(self, which: str = "final"):
        """The trained model from ``checkpoints/<which>.pt`` (training first if needed)."""
        self.train()
        return self.trained_model(which)[0]

    def require_trained(self) -> None:
        """Refuse to evaluate or sample a run that has not finished training (instead of
        silently training it to the end)."""
        if not self.is_trained():
            why = ("its settings or data changed since" if (self.checkpoints_dir / "final.pt").exists()
                   else "it has not finished")
            raise CheckpointError(f"{self.dir} has no final model: {why} training",
                                  f"finish it first ({self.resume_command()}), or point "
                                  "--output-dir at a finished run.")

    def trained_model(self, which: str = "final"):
        """``(model, state)`` of ``checkpoints/<which>.pt``, refusing a foreign tokenizer."""
        if which not in CHECKPOINTS:  # it becomes a file name
            raise ConfigError(f"unknown checkpoint {which!r}", f"use one of {', '.join(CHECKPOINTS)}.")
        model, state = load_model(self.checkpoints_dir / f"{which}.pt")
        tok_file = self.tokenizer_dir / "tokenizer.json"
        trained_with = state.get("tokenizer_sha256")
        if trained_with and tok_file.is_file() and sha256_file(tok_file) != trained_with:
            raise TokenizerError(
                f"{tok_file} is not the tokenizer that {which}.pt was trained with "
                f"(sha256 {sha256_file(tok_file)[:12]}..., the checkpoint expects "
                f"{trained_with[:12]}...)",
                "restore the run's own tokenizer.json, or retrain: tinylm train --fresh.")
        return model, state

    def samples(self, per_language: int = 3) -> dict:
        """Generate samples in every language and judge them; writes ``samples.json``."""
        from tinylm.evaluate import sample_report  # torch: once a stage runs

        with self.locked():
            report = sample_report(self.model(), self.tokenizer(), self.cfg, per_language)
            write_json(self.samples_path, report)
        return report

    def budgets(self, requests: int = REQUESTS) -> dict:
        """Measure inference in a fresh process and check the budgets; writes ``budgets.json``."""
        with self.locked():
            self.train()
            # on the device the model runs on: a GPU's latency, not the CPU's
            measured = measure_inference(self.checkpoints_dir / "final.pt",
                                         self.cfg.budget_prompt_tokens,
                                         self.cfg.budget_new_tokens, requests,
                                         device=self.cfg.device)
            report = check_budgets(measured, self.cfg.budget_rss_mb, self.cfg.budget_p95_ms)
            write_json(self.budgets_path, report)
        return report


def _stamped(folder: Path) -> dict | None:
    """The ``fingerprint.json`` a stage stamped on ``folder``, or None if there is none."""
    try:
        stamp = json.loads((folder / "fingerprint.json").read_text())
        return stamp if isinstance(stamp.get("fingerprint"), str) else None
    except (OSError, ValueError, AttributeError):
        return None


def _final_digests(folder: Path) -> list[str]:
    """The digests listed beside ``final.pt`` (two while a save is under way, else one)."""
    try:
        return digest_path(folder / "final.pt").read_text().split()
    except (OSError, UnicodeDecodeError):
        return []


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) if folder.exists() else 0


def _files_digest(path: Path) -> list:
    """Name, size and mtime of every corpus file: cheap, and changes when a file does."""
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.exists()]
