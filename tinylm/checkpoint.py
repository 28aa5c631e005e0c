"""Files that must never be half-written or trusted blindly.

Every artifact goes through ``atomic_write_*``: write a temporary file beside the target,
flush and fsync it, then ``os.replace`` it into place, so a kill at any moment leaves the
previous good file. Checkpoints also get a ``.sha256`` file beside them; ``load_checkpoint``
checks it and loads with ``weights_only=True``, so a truncated or tampered file is reported,
never silently used, and nothing untrusted is unpickled. ``RunLock`` keeps two processes
from writing the same run directory.

torch is imported only by the functions that need it, so that the CLI can refuse bad input
(and take locks) without paying for the import.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from tinylm import __version__
from tinylm.errors import CheckpointError, PrerequisiteError

FORMAT = 1  # bump when the checkpoint layout changes incompatibly
TMP_SUFFIX = ".tmp"  # temporary files are ".<name>.<random>.tmp" beside their target


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask is process-wide, not safe to flip per write


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # make the rename itself survive a power cut


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


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
    from tinylm.model import GPT, GPTConfig

    state = load_checkpoint(Path(path), device)
    model = GPT(GPTConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state


def load_resume_state(ckpt_dir: Path, map_location: Any = "cpu",
                      quiet: bool = False) -> tuple[dict[str, Any], Path]:
    """The newest good training state of a run: ``last.pt``, else ``best.pt`` with a warning."""
    ckpt_dir = Path(ckpt_dir)
    last, best = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    if not last.exists() and not best.exists():
        raise CheckpointError(f"--resume given but {ckpt_dir} holds no checkpoint",
                              "run without --resume to start fresh.")
    try:
        return load_checkpoint(last, map_location), last
    except CheckpointError as exc:
        if not best.exists():
            raise CheckpointError(f"{exc.message}, and there is no best.pt to fall back to",
                                  "start fresh with --fresh (or in a new --output-dir).") from None
        try:
            state = load_checkpoint(best, map_location)
        except CheckpointError as exc2:
            raise CheckpointError(f"{exc.message}; the fallback failed too: {exc2.message}",
                                  "start fresh with --fresh (or in a new --output-dir).") from None
        if not quiet:
            print(f"warning: {exc.message}; resuming from {best} instead (step {state['step']})",
                  file=sys.stderr)
        return state, best


class RunLock:
    """An exclusive lock on a run directory: ``with RunLock(run_dir): ...``.

    The lock file holds the owner's pid and start time; a lock whose process is gone (or
    whose pid now belongs to another process) is stale and is taken over, so a run killed
    with SIGKILL does not block the next one; the temporary files the dead run left are
    removed then. Inside one process the lock is shared and re-entrant (``Run.train`` holds
    it while ``Trainer.fit`` takes it again). A process whose parent holds the lock (the
    pipeline running a chapter in a Jupyter kernel) names that parent in
    ``TINYLM_LOCK_PID`` and shares the lock instead of refusing.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self.held = False  # this object created the lock file
        self._depth = 0
        self._shared = False

    def acquire(self) -> None:
        """Create the lock file, or raise ``PrerequisiteError`` if a live process holds it."""
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        me = f"{os.getpid()} {_start_time(os.getpid())}\n"
        for _ in range(3):
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lock.", suffix=TMP_SUFFIX)
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(me)
                os.link(tmp, self.path)  # atomic, fails if the lock exists; never half-written
                self.held = True
                return
            except FileExistsError:
                pid, start = self._owner()
                if pid is not None and not _ours(pid) and _alive(pid, start):
                    raise PrerequisiteError(
                        f"run directory {folder} is in use by process {pid}",
                        f"wait for it to finish, stop it (kill -INT {pid} saves a checkpoint "
                        "first), or use another --output-dir.") from None
                self.path.unlink(missing_ok=True)  # stale: its owner is dead
                remove_temp_files(folder)
            finally:
                Path(tmp).unlink(missing_ok=True)
        raise PrerequisiteError(f"could not lock {folder}", f"remove {self.path} if no run uses it.")

    def _owner(self) -> tuple[int | None, float | None]:
        try:
            fields = self.path.read_text().split()
            return int(fields[0]), (float(fields[1]) if len(fields) > 1 else None)
        except (OSError, ValueError, IndexError):
            return None, None

    def release(self) -> None:
        if self.held and self._owner()[0] == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "RunLock":
        if self._depth == 0:
            owner = self._owner()[0] if self.path.exists() else None
            self._shared = owner is not None and _ours(owner)
            if not self._shared:
                self.acquire()
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and not self._shared:
            self.release()


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files that killed writers left under ``folder`` (never used)."""
    removed = []
    for tmp in Path(folder).rglob(f".*{TMP_SUFFIX}"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _ours(pid: int) -> bool:
    return pid == os.getpid() or str(pid) == os.environ.get("TINYLM_LOCK_PID")


def _start_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # no psutil, no such process, no permission
        return None


def _alive(pid: int, start: float | None = None) -> bool:
    """Is ``pid`` running, and is it the process that took the lock (not a reused pid)?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start is not None:
        now = _start_time(pid)
        if now is not None and abs(now - start) > 1.0:
            return False
    return True
