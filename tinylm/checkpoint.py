"""Checkpoints that are never trusted blindly.

Each checkpoint is written atomically (``files.atomic_write_bytes``) with a ``.sha256`` file
beside it; ``load_checkpoint`` checks it and loads with ``weights_only=True``, so a truncated
or tampered file is reported, never silently used, and nothing untrusted is unpickled.

torch is imported only by the functions that need it, so that the CLI can refuse bad input
without paying for the import.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import re
import sys
from pathlib import Path
from typing import Any

from tinylm import __version__
from tinylm.config import CHOICES, RANGES
from tinylm.errors import CheckpointError
from tinylm.files import atomic_write_bytes, atomic_write_text, sha256_file

FORMAT = 1  # bump when the checkpoint layout changes incompatibly


def digest_path(path: Path) -> Path:
    """Where the checksum of checkpoint ``path`` lives: ``last.pt`` -> ``last.pt.sha256``."""
    return Path(f"{path}.sha256")


def _digests(path: Path) -> list[str]:
    try:
        return Path(path).read_text().split()
    except (OSError, UnicodeDecodeError):
        return []


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, lists, dicts) with a checksum beside it.

    Two files cannot be replaced in one step, so the checksum file first lists the new
    digest *and* the old one, then the checkpoint is replaced, then the old digest is
    dropped. A kill at any moment leaves a checkpoint (old or new, whole) whose digest is
    listed, and ``load_checkpoint`` accepts nothing else.
    """
    import torch

    path = Path(path)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "tinylm_version": __version__, **state}, buf)
    data = buf.getvalue()
    new = hashlib.sha256(data).hexdigest()
    digests = digest_path(path)
    atomic_write_text(digests, "\n".join([new, *_digests(digests)][:3]) + "\n")
    atomic_write_bytes(path, data)
    atomic_write_text(digests, new + "\n")


def _fallback(path: Path) -> str:
    if path.name == "last.pt":
        return ("`tinylm train --resume` falls back to best.pt when last.pt is damaged; if "
                "best.pt is damaged too, start fresh with --fresh (or a new --output-dir).")
    return ("fall back to another checkpoint of the run (best.pt or last.pt: --checkpoint "
            "best or last), let `tinylm train --resume` finish the run again, or start fresh "
            "with --fresh.")


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint after checking its checksum, format and version."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", "train a model first: tinylm train.")
    digest_file = digest_path(path)
    if not digest_file.is_file():
        raise CheckpointError(f"checkpoint {path} has no checksum file {digest_file.name}, so it "
                              "cannot be trusted", _fallback(path))
    expected = _digests(digest_file)
    actual = sha256_file(path)
    if actual not in expected:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated (sha256 {actual[:12]}... does not match "
            f"{digest_file.name}); it was not used", _fallback(path))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" ({found[1]})" if found else ""
        raise CheckpointError(
            f"checkpoint {path} holds pickled Python objects{what}, not only tensors and plain "
            "data; tinylm loads checkpoints with weights_only=True and refused it",
            "use checkpoints written by tinylm only; if you trust the file, re-save its tensors "
            "with your own script.") from None
    except Exception as exc:  # a damaged zip comes in many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read: {first}", _fallback(path)) from None
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path} is not a tinylm checkpoint", _fallback(path))
    if not isinstance(state["format"], int) or isinstance(state["format"], bool):
        raise CheckpointError(f"{path} is not a tinylm checkpoint (its format is "
                              f"{state['format']!r:.40})", _fallback(path))
    if state["format"] > FORMAT:
        raise CheckpointError(
            f"checkpoint {path} was written by tinylm {state.get('tinylm_version')} "
            f"(format {state['format']}), newer than this tinylm {__version__} (format {FORMAT})",
            "upgrade tinylm (pip install -U tinylm) to read it.")
    return state


def load_model(path: Path, device: Any = "cpu"):
    """A trained model from a checkpoint, in eval mode, and the checkpoint's other state.

    Lives here rather than beside the trainer so that a process that only serves the model
    (the budget measurement, ``tinylm generate``) never imports the training code.
    """
    from tinylm.model import GPT  # torch: only once a model is loaded

    path = Path(path)
    state = load_checkpoint(path, device)
    model = GPT(_model_config(state, path))
    try:
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, AttributeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} does not hold the weights of the model it "
                              f"describes: {first[:300]}", _fallback(path)) from None
    return model.to(device).eval(), state


def _model_config(state: dict[str, Any], path: Path):
    """The checkpoint's ``GPTConfig``, every value of the type and range its setting has
    in ``Config``: a damaged or foreign one is refused before it can size a model."""
    from tinylm.model import GPT2_ARCHITECTURE, GPTConfig  # torch: only once a model is loaded

    saved = state.get("model_config")
    if isinstance(saved, dict):  # saved before the architecture was a setting: GPT-2's
        saved = {**GPT2_ARCHITECTURE, **saved}
    fields = {f.name: f.type for f in dataclasses.fields(GPTConfig)}

    def fits(name: str, value: Any) -> bool:
        if name in GPT2_ARCHITECTURE:  # the architecture's settings: a choice or a flag
            kind = type(GPT2_ARCHITECTURE[name])
            return type(value) is kind and (kind is bool or value in CHOICES[name])
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        whole = isinstance(value, int) or fields[name] in ("float", float)
        lo, hi, _ = RANGES[name]
        return number and whole and lo <= value <= hi

    if not (isinstance(saved, dict) and saved.keys() == fields.keys()
            and all(fits(k, v) for k, v in saved.items()) and saved["n_embd"] % saved["n_head"] == 0):
        raise CheckpointError(f"checkpoint {path} has a malformed model_config "
                              f"({str(saved)[:200]}); it was not used", _fallback(path))
    return GPTConfig(**saved)


#: What a training state holds besides the model (``Trainer.state_dict``), and its type.
TRAINING_STATE = {"model": dict, "optimizer": dict, "model_config": dict, "config": str,
                  "step": int, "sampler": dict, "epoch_loss_sum": float, "epoch_steps": int,
                  "history": str, "best_val": float, "elapsed": float, "resumed": str}


def _load_training_state(path: Path, map_location: Any) -> dict[str, Any]:
    """A checkpoint that holds a whole training state, else ``CheckpointError`` naming what
    is missing (so a damaged last.pt falls back to best.pt instead of failing later)."""
    import json

    state = load_checkpoint(path, map_location)
    _model_config(state, path)
    bad = [k for k, kind in TRAINING_STATE.items()
           if not isinstance(state.get(k), (int, float) if kind is float else kind)]
    try:
        config = json.loads(state["config"]) if "config" not in bad else None
    except ValueError:
        config = None
    if not isinstance(config, dict) and "config" not in bad:
        bad.append("config")
    if bad:
        raise CheckpointError(f"checkpoint {path} is not a whole training state (missing or "
                              f"malformed: {', '.join(bad)})", _fallback(path))
    return state


def load_resume_state(ckpt_dir: Path, map_location: Any = "cpu",
                      quiet: bool = False) -> tuple[dict[str, Any], Path]:
    """The newest good training state of a run: ``last.pt``, else ``best.pt`` with a warning."""
    ckpt_dir = Path(ckpt_dir)
    last, best = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    if not last.exists() and not best.exists():
        raise CheckpointError(f"--resume given but {ckpt_dir} holds no checkpoint",
                              "run without --resume to start fresh.")
    try:
        return _load_training_state(last, map_location), last
    except CheckpointError as exc:
        if not best.exists():
            raise CheckpointError(f"{exc.message}, and there is no best.pt to fall back to",
                                  "start fresh with --fresh (or in a new --output-dir).") from None
        try:
            state = _load_training_state(best, map_location)
        except CheckpointError as exc2:
            raise CheckpointError(f"{exc.message}; the fallback failed too: {exc2.message}",
                                  "start fresh with --fresh (or in a new --output-dir).") from None
        if not quiet:
            print(f"warning: {exc.message}; resuming from {best} instead (step {state['step']})",
                  file=sys.stderr)
        return state, best
