"""The ``tinylm`` command: pipeline, train, generate, evaluate, check, info, export, plot.

Every configuration value is a flag (``--epochs 5``, ``--vocab-size 2048``); a preset gives
the starting values and flags override them. Errors print their message and remedy and
exit with their code (tinylm/errors.py); ``--debug`` shows the traceback instead. This is
the entry point, so it is what makes the process-wide settings (``tinylm.runtime``) and asks
the user questions; the library below it does neither. Started by torchrun, ``tinylm train``
is one process of a data-parallel run: it joins the process group, and only rank 0 speaks.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import signal
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

from tinylm import __version__, distributed, estimate
from tinylm.budget import REQUESTS, raise_if_budget_failed
from tinylm.config import EVALUATION, PRESETS, SAMPLING, Config, describe, load_preset
from tinylm.errors import CheckpointError, ConfigError, Interrupted, PrerequisiteError, TinyLMError
from tinylm.files import adopt_parent_lock, atomic_write_bytes, write_json
from tinylm.pipeline import chapter_paths, check_parameters, run_pipeline
from tinylm.runtime import (check_prerequisites, environment, resolve_device, resolve_dtype,
                            set_threads, setup_process, use_passive_openmp_wait)
from tinylm.stages import Run

EXAMPLES = """examples (every command works on runs/<preset>, runs/default without --preset,
unless --output-dir names another folder):
  tinylm train --preset quick                     # a small model in under a minute -> runs/quick
  tinylm train --preset default --epochs 10       # the default model, more epochs
  tinylm train --resume                           # continue an interrupted run of runs/default
  tinylm train --preset default --nproc 2         # in 2 processes (data parallel, torchrun)
  tinylm generate --preset quick --lang es --prompt "En el principio"
  tinylm evaluate                                 # losses, samples, budgets; exit 5 on failure
  tinylm evaluate --json | jq .passed             # the same, for scripts
  tinylm plot                                     # loss curves -> runs/default/loss_curves.png
  tinylm export exports/default                   # a Hugging Face transformers model
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 1 (a configuration error), not argparse's 2
    (which means a corpus problem here), and says what to do, with close matches of a
    mistyped flag."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        hint = ""
        if message.startswith("unrecognized arguments:"):
            known = [o for a in self._actions for o in a.option_strings
                     if o.startswith("--") and o not in ("--help", "--version")]
            for word in message.split(":", 1)[1].split():
                close = _closest(word.split("=")[0], known)
                if word.startswith("--") and close:
                    hint += f" {word}: did you mean {' or '.join(close)}?"
        print(f"  what to do:{hint} see `{self.prog} --help`.", file=sys.stderr)
        self.exit(1)


def _closest(word: str, known: list[str]) -> list[str]:
    """The flags nearest to a mistyped one: the best match, and any nearly as good. Every flag
    shares the leading dashes, so difflib's cutoff alone lets unrelated ones through
    (--epocs: --epochs 0.93, --nproc 0.71).

    >>> _closest("--epocs", ["--epochs", "--nproc", "--threads"])
    ['--epochs']
    """
    score = {k: difflib.SequenceMatcher(None, word, k).ratio() for k in known}
    best = max(score.values(), default=0.0)
    return sorted((k for k in known if score[k] >= max(0.6, best - 0.1)), key=score.get,
                  reverse=True)[:3]


def _add_config_flags(p: argparse.ArgumentParser, names: tuple[str, ...] | None = None,
                      title: str = "configuration (override the preset; see chapter 9 for "
                                   "effects)") -> None:
    """One flag per Config field (or per field in ``names``), named and described by the
    field; defaults are None so that only given flags override."""
    g = p.add_argument_group(title)
    for f in dataclasses.fields(Config):
        if names is None or f.name in names:
            g.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                           metavar="V", help=describe(f.name))


def _run_options(p: argparse.ArgumentParser, reads: bool = False) -> None:
    """--preset, --output-dir and --debug: every command finds its run folder by one rule
    (``_run_dir``), so `tinylm train --preset quick` and `tinylm generate --preset quick`
    meet in runs/quick."""
    p.add_argument("--preset", default="default",
                   help="the run of this preset, runs/<preset> (its settings are the run's own)"
                   if reads else f"starting values: {', '.join(PRESETS)} (examples/*.toml) or a "
                   ".toml path")
    p.add_argument("--output-dir", default=None, help="the run directory (default runs/<preset>)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _training_options(p: argparse.ArgumentParser) -> None:
    """The flags of every command that trains (train, pipeline): mode, output, settings."""
    _run_options(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", default=None, help="continue from checkpoints")
    mode.add_argument("--fresh", action="store_true", help="discard existing checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress output")


PIPELINE_EPILOG = """examples:
  tinylm pipeline --preset quick                   # the whole book on a tiny model, ~1 min
  tinylm pipeline --preset default                 # the default model (~8 MB, one epoch)
  tinylm pipeline --epochs 2 --chapters 5,7        # only training and evaluation
  tinylm pipeline --output-dir runs/default --resume

what the main values cost:
  --epochs N          time grows linearly with N; memory unchanged
  --batch-size N      memory grows linearly (activations); time per epoch about flat
  --learning-rate X   too high diverges (NaN), too low learns slowly; no time or memory cost
  --vocab-size N      bigger: fewer tokens per byte but a larger softmax (time, memory)
  --languages a,b     any of en, es, fr, de, it; each adds ~4 MB of text and its time
"""


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tinylm", description="Train a tiny bilingual GPT on a CPU.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"tinylm {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="build corpus, tokenizer and tokens, train, evaluate",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _training_options(t)
    t.add_argument("--no-eval", action="store_true", help="skip samples and budgets after training")
    _add_config_flags(t)

    pl = sub.add_parser(
        "pipeline", help="run the book's chapters headless (papermill) into a run directory",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=PIPELINE_EPILOG,
        description="Execute the book's chapters in order with the given configuration; the "
                    "executed notebooks land in RUN/notebooks next to every artifact.")
    _training_options(pl)
    pl.add_argument("--chapters", default=None, help="a subset, e.g. 1,2,5 (default: all)")
    pl.add_argument("--skip-corpus", action="store_true", help="reuse the existing corpus as is")
    pl.add_argument("--skip-tokenizer", action="store_true", help="reuse the existing tokenizer as is")
    _add_config_flags(pl)

    g = sub.add_parser("generate", help="sample text from a trained run")
    _run_options(g, reads=True)
    g.add_argument("--lang", default="en", help="language tag of the sample (en, es, ...)")
    g.add_argument("--prompt", default="", help="text to continue")
    g.add_argument("--checkpoint", default="final", choices=("final", "best", "last"),
                   help="which checkpoint of the run (default final)")
    g.add_argument("-n", "--num-samples", type=int, default=1,
                   help="samples to draw, the i-th with seed + i")
    g.add_argument("--json", action="store_true",
                   help="JSON Lines: one object per sample (lang, prompt, text, seed, settings)")
    _add_config_flags(g, SAMPLING, "sampling (the run's own settings unless given; the "
                                   "defaults below are a new run's)")

    e = sub.add_parser("evaluate", help="validation losses, samples, budgets and checks of a run")
    _run_options(e, reads=True)
    e.add_argument("--requests", type=int, default=REQUESTS, help="inference requests to time")
    e.add_argument("--json", action="store_true", help="one JSON object on stdout; text on stderr")
    _add_config_flags(e, EVALUATION, "samples and budgets (the run's own settings unless given; "
                                     "the defaults below are a new run's)")

    c = sub.add_parser("check", help="check the prerequisites of this machine, and estimate a "
                       "run's time (a few seconds of measurement)")
    _run_options(c)
    _add_config_flags(c)

    i = sub.add_parser("info", help="versions, and the summary of a run directory")
    i.add_argument("--output-dir", default=None)
    i.add_argument("--debug", action="store_true")
    i.add_argument("--json", action="store_true", help="one JSON object on stdout")

    x = sub.add_parser("export", help="write a trained run as a Hugging Face transformers model",
                       description="Write the run's model, tokenizer, sampling settings and a "
                                   "model card into DEST, loadable with transformers' "
                                   "AutoModelForCausalLM and AutoTokenizer.from_pretrained(DEST).")
    _run_options(x, reads=True)
    x.add_argument("dest", metavar="DEST", help="the folder to create")
    x.add_argument("--format", default="hf", choices=("hf",),
                   help="hf: Hugging Face transformers, as a GPT-2, GPT-NeoX, Llama or Qwen3, whichever "
                        "the model's architecture is (default)")
    x.add_argument("--checkpoint", default="final", choices=("final", "best", "last"),
                   help="which checkpoint of the run (default final)")
    x.add_argument("--force", action="store_true", help="replace DEST if it exists and is not empty")

    pl = sub.add_parser("plot", help="draw a run's loss curves into a PNG file")
    _run_options(pl, reads=True)
    pl.add_argument("--out", default=None, help="the PNG file (default RUN/loss_curves.png)")
    p.commands = sub.choices  # name -> subparser, to report unknown flags where they belong
    return p


def _given(args: argparse.Namespace) -> dict:
    """The settings given as flags (those a command takes and the user passed)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
            if getattr(args, f.name, None) is not None}


def config_from_args(args: argparse.Namespace) -> Config:
    return load_preset(args.preset, **_given(args))


def _run_dir(args: argparse.Namespace, cfg: Config | None = None) -> Path:
    """The run folder of every command: --output-dir, else runs/<name>, the name of the
    preset (``cfg``'s when the command has built one from its flags)."""
    if args.output_dir:
        return Path(args.output_dir)
    return Path("runs") / (cfg or load_preset(args.preset)).name


def _training_run(args: argparse.Namespace):
    """The ``Run`` a training command works on: settings from preset and flags (their
    warnings printed), the run directory (default ``runs/<preset>``), and the resume choice
    (--resume, --fresh, or asked on a terminal)."""
    if distributed.under_launcher():  # a rank of `tinylm train --nproc N`: the folder says it all
        cfg = Config.load(Path(args.output_dir) / "config.json")
    else:
        cfg = config_from_args(args)
    if distributed.launched():
        cfg = _config_of_rank(cfg, args)
    master = distributed.launched_rank() == 0  # the other ranks of a torchrun launch are quiet
    for warning in cfg.warnings() if master else ():
        print(f"warning: {warning}", file=sys.stderr)
    resume = True if args.resume else (False if args.fresh else None)
    run = Run(_run_dir(args, cfg), cfg, progress=not args.quiet and master, resume=resume)
    if resume is None and not distributed.launched() and run.has_checkpoints() and not run.is_trained():
        run.resume = _ask_resume(run.checkpoints_dir)
    return run


def _config_of_rank(cfg: Config, args: argparse.Namespace) -> Config:
    """Under torchrun, ``nproc`` is the number of processes torchrun started on this machine."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if args.nproc is not None and cfg.nproc != local:
        raise ConfigError(f"--nproc {cfg.nproc} given, but torchrun started {local} process(es) "
                          "on this machine", "drop --nproc when torchrun starts tinylm (its "
                          "--nproc-per-node says how many), or drop torchrun: tinylm train "
                          "--nproc N starts it for you.")
    distributed.require_gpus(cfg.device, local)
    return cfg.replace(nproc=local)


def _ask_resume(checkpoints_dir: Path) -> bool | None:
    """On a terminal, ask what to do with an earlier run's checkpoints; None without one
    (the run then refuses, naming --resume and --fresh)."""
    if sys.stdin is None or not sys.stdin.isatty():
        return None
    answer = input(f"{checkpoints_dir} holds checkpoints of an earlier run. "
                   "[r]esume, start [f]resh, or [q]uit? ").strip().lower()
    return True if answer.startswith("r") else (False if answer.startswith("f") else None)


def _load_run(args: argparse.Namespace, **overrides):
    """The trained run a command reads, with its own settings (``overrides`` changed)."""
    run_dir = _run_dir(args)
    if not (run_dir / "config.json").is_file():
        raise TinyLMError(f"{run_dir} is not a tinylm run directory (no config.json)",
                          "train first (tinylm train --output-dir DIR) or point --output-dir at a run.")
    cfg = Config.load(run_dir / "config.json").replace(**overrides)
    return Run(run_dir, cfg, progress=True, resume=True)


def cmd_train(args: argparse.Namespace) -> int:
    """Train, then sample and measure. With --nproc N, this command starts N processes under
    torchrun (``distributed.train_in_processes``), each running this command on the run
    folder; started by torchrun, this process first joins the others, and only rank 0 takes
    the lock, samples, measures and reports."""
    run = _training_run(args)
    joined = distributed.process_group(run.cfg.device, run.resume_command()) \
        if distributed.launched() else nullcontext()
    with joined:
        master = distributed.is_master()
        with run.locked() if master else nullcontext():  # one holder from the first stage to the last file
            setup_process(distributed.threads_per_process(run.cfg.threads))
            if not distributed.launched():  # ranks under torchrun: their launcher estimated
                _print_estimate(run, args)
            if run.cfg.nproc > 1 and not distributed.launched():
                metrics = distributed.train_in_processes(run, quiet=args.quiet)
            else:
                metrics = run.train()
            from tinylm.evaluate import training_checks  # torch: after the input checks

            checks = training_checks(metrics)
            if master and not args.no_eval:
                run.samples()
                run.budgets()
    if master and not distributed.under_launcher():  # else the launcher's caller reports
        _summary(run, checks)
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    run = _training_run(args)
    chapters = args.chapters.split(",") if args.chapters else None
    for notebook in chapter_paths(chapters):  # refused before the estimate's measurement
        check_parameters(notebook)
    # measured as chapter 5's kernel will train: its threads, subnormals flushed, freed memory
    # kept (without those the estimate would measure a slower step than the training takes)
    setup_process(run.cfg.threads)
    _print_estimate(run, args, pipeline=True)
    if run.cfg.nproc > 1 and any(p.name >= "05" for p in chapter_paths(chapters)):
        # the chapters' run.train() trains in this one process: the processes start here
        distributed.train_in_processes(run, quiet=args.quiet)
    skip = tuple(s for s in ("corpus", "tokenizer") if getattr(args, f"skip_{s}"))
    summary = run_pipeline(run.cfg, run.dir, chapters, run.resume, skip, progress=not args.quiet)
    # the record of this command: its chapters' times and its own, estimate included
    summary["command_seconds"] = round(time.perf_counter() - started, 1)
    write_json(run.dir / "pipeline.json", summary)
    print(f"\npipeline finished in {summary['command_seconds']:.0f} s")
    if run.metrics_path.exists():
        from tinylm.evaluate import training_checks  # torch: after the input checks

        _summary(run, training_checks(json.loads(run.metrics_path.read_text())))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tinylm.evaluate import raise_if_checks_failed, training_checks  # torch: after the input checks

    with _stdout_to_stderr(args.json):  # --json: stdout holds the JSON object alone
        run = _load_run(args, **_given(args))
        with run.locked():
            run.require_trained()
            metrics = run.train()
            checks = training_checks(metrics)
            samples = run.samples()
            budgets = run.budgets(args.requests)
        _summary(run, checks)
    if args.json:
        print(json.dumps({"run_dir": str(run.dir),
                          "passed": checks["passed"] and samples["passed"] and budgets["passed"],
                          "validation": metrics["history"][-1], "checks": checks["checks"],
                          "samples": samples, "budgets": budgets}, indent=2, ensure_ascii=False))
    raise_if_checks_failed(checks, samples, str(run.samples_path))
    raise_if_budget_failed(budgets)
    return 0


def _stdout_to_stderr(enabled: bool):
    """While enabled, what stages print (progress, summaries) goes to stderr, not stdout."""
    import contextlib

    return contextlib.redirect_stdout(sys.stderr) if enabled else contextlib.nullcontext()


def _summary(run, checks: dict) -> None:
    from tinylm.evaluate import describe_check  # torch: after the input checks

    print(f"\nrun directory: {run.dir}")
    for path in sorted(run.dir.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and path.suffix in (".json", ".pt", ".txt", ".bin", ".ipynb"):
            print(f"  {path.relative_to(run.dir)!s:40} {path.stat().st_size / 1024:10.1f} KB")
    for c in checks["checks"]:
        mark = "ok" if c["passed"] else ("--" if c["value"] is None else "FAIL")
        print(f"  [{mark}] {describe_check(c)}")
    if run.samples_path.exists():
        s = json.loads(run.samples_path.read_text())
        passed = sum(x["passed"] for x in s["samples"])
        print(f"  [{'ok' if s['passed'] else 'FAIL'}] samples: {passed} of {len(s['samples'])} passed")
        if s.get("language_not_measured"):
            print(f"  [--] sample language of {', '.join(s['language_not_measured'])}: not "
                  "measured (no list of its common words); judged on repetition only")
    if run.budgets_path.exists():
        b = json.loads(run.budgets_path.read_text())
        for c in b["checks"]:
            print(f"  [{'ok' if c['passed'] else 'FAIL'}] {c['name']}: {c['value']:.1f} {c['unit']} "
                  f"(limit {c['limit']:.0f})")
    if run.metrics_path.exists():
        m = json.loads(run.metrics_path.read_text())
        print(f"  training time {m['timing']['train_seconds']:.0f} s, "
              f"{m['timing']['tokens_per_second']:.0f} tokens/s")


def cmd_generate(args: argparse.Namespace) -> int:
    from tinylm.generate import generate  # torch: after the input checks
    from tinylm.tokenizer import load_tokenizer  # numpy: likewise

    run = _load_run(args)
    cfg = run.cfg.replace(**_given(args))  # checked against the settings' ranges
    if args.num_samples < 1:
        raise ConfigError(f"--num-samples {args.num_samples} is not a positive number",
                          "ask for one sample or more.")
    ckpt = run.checkpoints_dir / f"{args.checkpoint}.pt"
    if not ckpt.exists() and (run.checkpoints_dir / "last.pt").exists():
        raise CheckpointError(f"{ckpt} does not exist: the run has not finished training",
                              f"finish it ({run.resume_command()}) or pass --checkpoint last.")
    model, _ = run.trained_model(args.checkpoint)
    tok = load_tokenizer(run.tokenizer_dir / "tokenizer.json")
    n_prompt = 1 + len(tok.encode(args.prompt).ids)  # the language tag comes first
    block = model.config.block_size
    if n_prompt >= block:  # the model would never see the start of the prompt, nor its tag
        raise ConfigError(f"the prompt is {n_prompt} tokens long with its language tag, but this "
                          f"model reads at most {block} tokens (block_size={block})",
                          f"shorten the prompt to fewer than {block - 1} tokens (about "
                          f"{(block - 2) * len(args.prompt) // max(n_prompt - 1, 1)} characters), "
                          "or train a model with a larger --block-size.")
    settings = {"checkpoint": args.checkpoint, **{k: getattr(cfg, k) for k in SAMPLING}}
    for i in range(args.num_samples):
        text = generate(model, tok, args.prompt, args.lang, cfg.sample_new_tokens,
                        temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                        min_p=cfg.min_p, repetition_penalty=cfg.repetition_penalty,
                        seed=cfg.seed + i)
        if args.json:
            print(json.dumps({"lang": args.lang, "prompt": args.prompt, "text": text,
                              **settings, "seed": cfg.seed + i}, ensure_ascii=False), flush=True)
            continue
        if args.num_samples > 1:  # one sample prints bare text, as it always has
            print(f"--- sample {i + 1} (seed {cfg.seed + i}) ---")
        print(args.prompt + text, flush=True)
    return 0


def _print_estimate(run, args: argparse.Namespace, pipeline: bool = False) -> None:
    """Before a long wait: this machine's measured speed and the run's expected time.

    Checkpoints the run may not use are refused first (the training would refuse them
    after the measurement), so a refusal never waits for seconds of measurement.
    """
    if run.is_trained():
        return
    if run.decide_resume():
        run.check_checkpoints("pipeline" if pipeline else "train")
    if args.quiet:
        return
    est = estimate.estimate(run.cfg, run.tokens_dir if run.is_current("tokens", run.tokens_dir)
                            else None, pipeline=pipeline)
    for line in estimate.explain(run.cfg, est, pipeline):
        print(line, file=sys.stderr, flush=True)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)  # a bad setting is refused before anything is measured
    results = check_prerequisites(_run_dir(args, cfg))
    for what, ok, detail in results:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}{': ' + detail if detail else ''}")
    failed = [w for w, ok, _ in results if not ok]
    if failed:
        raise PrerequisiteError(f"missing prerequisites: {', '.join(failed)}",
                                "run `make venv` (installs everything) or fix the items marked FAIL.")
    setup_process(cfg.threads)  # measured as `tinylm train` would train
    est = estimate.estimate(cfg)
    for line in estimate.explain(cfg, est):
        print(f"  {line}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    set_threads(0)
    device = resolve_device("auto")
    env = environment(device, resolve_dtype("auto", device))
    m = None
    if args.output_dir:
        run_dir = Path(args.output_dir)
        metrics = run_dir / "training_metrics.json"
        if not metrics.exists():
            raise TinyLMError(f"{run_dir} has no training_metrics.json", "train first: tinylm train.")
        m = json.loads(metrics.read_text())
        # epochs trained so far, a fraction where a run ends (or stopped) inside one
        trained = m["history"][-1]["step"] / m["data"]["steps_per_epoch"] if m["history"] else 0
    if args.json:
        run = None if m is None else {
            "run_dir": args.output_dir, "status": m["status"], "epochs": round(trained, 2),
            "parameters": m["model"]["parameters"], "final_val_loss": m["final_val_loss"],
            "best_val_loss": m["best_val_loss"], "timing": m["timing"],
            "final": m["history"][-1] if m["history"] else None}
        print(json.dumps({"environment": env, "run": run}, indent=2))
        return 0
    for k, v in env.items():
        print(f"  {k:12} {v}")
    if m is not None:
        loss = ("no epoch finished yet, so no validation loss" if m["final_val_loss"] is None
                else f"final val loss {m['final_val_loss']:.3f}")
        print(f"\nrun {args.output_dir}: {m['status']}, {trained:.3g} epochs, "
              f"{m['model']['parameters']:,} parameters, {loss}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tinylm.export import export_run  # torch: after the input checks

    run_dir = _run_dir(args)
    dest = export_run(run_dir, args.dest, format=args.format, checkpoint=args.checkpoint,
                      force=args.force)
    print(f"exported {run_dir / 'checkpoints' / (args.checkpoint + '.pt')} to {dest}:")
    for path in sorted(dest.iterdir()):
        print(f"  {path.name:24} {path.stat().st_size / 1024:10.1f} KB")
    print(f"load it with transformers: AutoModelForCausalLM.from_pretrained({str(dest)!r}); "
          f"the model card is {dest / 'README.md'}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Loss curves as a PNG, for runs trained from the command line: no display needed."""
    import io

    import matplotlib

    run_dir = _run_dir(args)
    out = Path(args.out) if args.out else run_dir / "loss_curves.png"
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out} does not end in .png", "name a .png file.")
    metrics = run_dir / "training_metrics.json"
    if not metrics.is_file():
        raise TinyLMError(f"{run_dir} has no training_metrics.json",
                          f"train first: tinylm train --output-dir {run_dir}.")
    m = json.loads(metrics.read_text())
    if not m["history"]:
        raise TinyLMError(f"{run_dir} has not finished an epoch yet, so there is no curve to draw",
                          "resume training (the command it printed when it stopped) until an "
                          "epoch ends, then plot again.")
    matplotlib.use("Agg")  # files only: no window, works without a display
    from tinylm.plots import plot_loss_curves  # matplotlib: only `tinylm plot` loads it

    buf = io.BytesIO()
    plot_loss_curves(m).savefig(buf, format="png", dpi=120)
    atomic_write_bytes(out, buf.getvalue())
    print(f"wrote {out}")
    return 0


COMMANDS = {"train": cmd_train, "pipeline": cmd_pipeline, "generate": cmd_generate,
            "evaluate": cmd_evaluate, "check": cmd_check, "info": cmd_info, "export": cmd_export,
            "plot": cmd_plot}


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM outside training stops as cleanly as Ctrl-C


def _report(failure: TinyLMError) -> None:
    """Print an error and its remedy. Of the processes of a data-parallel run, rank 0 speaks
    for all (through tinylm's launcher when that started them); another rank prints only
    what happened to it alone, naming itself."""
    rank = distributed.launched_rank()
    if isinstance(failure, distributed.Rank0Stopped) or (rank == 0 and distributed.under_launcher()) \
            or (rank > 0 and isinstance(failure, Interrupted)):
        return
    who = f"rank {rank}: " if rank else ""
    if isinstance(failure, Interrupted):  # a new line after the progress bar
        print(f"\n{who}interrupted: {failure.message}", file=sys.stderr)
    else:
        print(f"{who}error: {failure.message}", file=sys.stderr)
    if failure.remedy:
        print(f"  what to do: {failure.remedy}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    use_passive_openmp_wait()  # before anything loads torch, and for every process we start
    adopt_parent_lock()  # a process of tinylm's launcher shares the launcher's lock
    main_thread = (threading.current_thread() is threading.main_thread()
                   and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN)
    # tinylm's launcher passes a stop on as SIGINT; SIGTERM is torchrun tearing down the rest
    # of a failed run, which must not cut a report short (tinylm.distributed.launch)
    on_term = signal.SIG_IGN if distributed.under_launcher() else _terminate
    previous = signal.signal(signal.SIGTERM, on_term) if main_thread else None
    try:
        code, failure = _run(args)
        if failure is not None:
            _report(failure)
        return distributed.report_to_launcher(code, failure)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> tuple[int, TinyLMError | None]:
    """The command's exit code, and the error it ended with (as a TinyLMError)."""
    debug = getattr(args, "debug", False)
    try:
        if distributed.launched() and args.command != "train":
            raise ConfigError(f"`tinylm {args.command}` runs in one process, but torchrun started "
                              "this one", "run it without torchrun; only `tinylm train` trains "
                              "in several processes (or give it --nproc N).")
        return COMMANDS[args.command](args) or 0, None
    except TinyLMError as exc:
        if debug:
            raise
        return exc.exit_code, exc
    except KeyboardInterrupt:
        if debug:
            raise
        return 130, Interrupted("stopped before training started or after it ended; every file "
                                "is written whole or not at all, so nothing half-written was kept",
                                "run the same command again: finished stages are skipped.")
    except OSError as exc:  # disk full, permissions, a file vanishing under us
        if debug:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        return 1, PrerequisiteError(f"{exc.strerror or exc}{where}", "check free disk space and "
                                    "permissions, then run the same command again (--debug shows "
                                    "where it happened).")


if __name__ == "__main__":
    sys.exit(main())
