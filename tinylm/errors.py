"""Errors a user can cause, each with an exit code and a remedy.

The CLI prints ``message`` and ``remedy`` and exits with ``exit_code``; it never shows a
traceback unless ``--debug`` is given. Exit codes (ARCHITECTURE.md):
1 prerequisites/config, 2 corpus, 3 tokenizer, 4 training, 5 validation/budgets,
130 interrupted (the shell convention for SIGINT).
"""
from __future__ import annotations


class TinyLMError(Exception):
    """Base class: a message saying what happened and a remedy saying what to do next."""

    exit_code = 1

    def __init__(self, message: str, remedy: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __str__(self) -> str:
        return f"{self.message}\n  remedy: {self.remedy}" if self.remedy else self.message


class ConfigError(TinyLMError):
    """A configuration value is missing, unknown or out of range."""

    exit_code = 1


class PrerequisiteError(TinyLMError):
    """The machine lacks something tinylm needs (disk, permissions, packages)."""

    exit_code = 1


class CorpusError(TinyLMError):
    """The corpus could not be read, downloaded or is unusable."""

    exit_code = 2


class TokenizerError(TinyLMError):
    """The tokenizer is missing, corrupt, or does not match the data or checkpoint."""

    exit_code = 3


class TrainingError(TinyLMError):
    """Training cannot start or continue (diverged, bad checkpoint, refused resume)."""

    exit_code = 4


class CheckpointError(TrainingError):
    """A checkpoint is missing, truncated, corrupt, or from an incompatible version."""

    exit_code = 4


class ValidationError(TinyLMError):
    """A quality check or resource budget failed."""

    exit_code = 5


class Interrupted(TinyLMError):
    """The user stopped the run (SIGINT/SIGTERM); a checkpoint was saved first."""

    exit_code = 130
