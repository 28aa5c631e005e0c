"""Files that must never be half-written or trusted blindly.

Every artifact goes through ``atomic_write_*``: write a temporary file beside the target,
flush and fsync it, then ``os.replace`` it into place, so a kill at any moment leaves the
previous good file. Checkpoints also get a ``.sha256`` file beside them; ``load_checkpoint``
checks it and loads with ``weights_only=True``, so a truncated or tampered file is reported,
never silently used, and nothing untrusted is unpickled. ``RunLock`` keeps two processes
from writing the same run directory.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from tinylm import __version__
from tinylm.errors import CheckpointError, TinyLMError

FORMAT = 1  # bump when the checkpoint layout changes incompatibly


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, lists, dicts) with a checksum beside it.

    The checksum is written after the checkpoint; a kill between the two leaves a
    mismatch that ``load_checkpoint`` reports rather than trusts.
    """
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "tinylm_version": __version__, **state}, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    atomic_write_text(Path(f"{path}.sha256"), hashlib.sha256(data).hexdigest() + "\n")


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint after checking its checksum, format and version."""
    path = Path(path)
    fallback = ("fall back to best.pt (tinylm train --resume uses the newest good "
                "checkpoint) or start fresh with a new --output-dir.")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", "train a model first: tinylm train.")
    digest_file = Path(f"{path}.sha256")
    if not digest_file.is_file():
        raise CheckpointError(f"checkpoint {path} has no checksum file {digest_file.name}", fallback)
    expected = digest_file.read_text().strip()
    actual = sha256_file(path)
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated (sha256 {actual[:12]}..., "
            f"expected {expected[:12]}...)", fallback)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}", fallback) from None
    if state.get("format", 0) > FORMAT:
        raise CheckpointError(
            f"checkpoint {path} was written by tinylm {state.get('tinylm_version')} "
            f"(format {state.get('format')}), newer than this tinylm {__version__}",
            "upgrade tinylm (pip install -U tinylm) to read it.")
    return state


class RunLock:
    """An exclusive lock on a run directory: ``with RunLock(run_dir): ...``.

    The lock file holds the owner's pid; a lock whose process is gone is stale and is
    taken over, so a run killed with SIGKILL does not block the next one. A process whose
    parent holds the lock (the pipeline running a chapter in a Jupyter kernel) names that
    parent in ``TINYLM_LOCK_PID`` and shares the lock instead of refusing.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pid = self._owner()
                if pid is not None and not _ours(pid) and _alive(pid):
                    raise TinyLMError(
                        f"run directory {self.path.parent} is in use by process {pid}",
                        "wait for it to finish, stop it, or use another --output-dir.") from None
                self.path.unlink(missing_ok=True)  # stale: its owner is dead
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return
        raise TinyLMError(f"could not lock {self.path.parent}", "remove its .lock file.")

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or -1)
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.held and self._owner() == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "RunLock":
        owner = self._owner() if self.path.exists() else None
        if owner is None or not _ours(owner):
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _ours(pid: int) -> bool:
    return pid == os.getpid() or str(pid) == os.environ.get("TINYLM_LOCK_PID")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
