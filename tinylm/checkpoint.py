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
import time
from pathlib import Path
from typing import Any

from tinylm import __version__
from tinylm.errors import CheckpointError, PrerequisiteError

FORMAT = 1  # bump when the checkpoint layout changes incompatibly
TMP_SUFFIX = ".tmp"  # temporary files are ".<name>.<random>.tmp" beside their target


def _new_temp_file(path: Path) -> tuple[int, Path]:
    """Create ``.<name>.<random>.tmp`` beside ``path``, open for writing.

    Created with mode 0666 like any file, so the kernel applies the umask: mkstemp would
    make it 0600, and the umask can only be read by setting it, for every thread at once.
    """
    while True:
        tmp = path.parent / f".{path.name}.{os.urandom(4).hex()}{TMP_SUFFIX}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
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

    The kernel keeps it: ``flock`` on the ``.lock`` file, which the kernel releases however
    the holder ends, so a run killed with SIGKILL does not block the next one and two
    processes never both take it. The file holds the holder's pid for the error message;
    the holder deletes it on release, so a pid found there by the next holder is a dead
    run's, and only then is it safe to remove the temporary files that run left. Inside one
    process the lock is shared and re-entrant (``Run.train`` holds it while ``Trainer.fit``
    takes it again). A process whose parent holds the lock (the pipeline running a chapter
    in a Jupyter kernel) names that parent in ``TINYLM_LOCK_PID`` and shares the lock
    instead of refusing.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None  # the locked file while this object holds the lock
        self._depth = 0

    @property
    def held(self) -> bool:
        """This object holds the lock (not merely shares it with its process or parent)."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, share it if this process or its parent holds it, or raise
        ``PrerequisiteError`` naming the process that holds it."""
        import fcntl  # POSIX only: imported here so the rest of the module works anywhere

        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + 1.0
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                pid = _pid_in(fd)
                os.close(fd)
                if not isinstance(exc, BlockingIOError):
                    raise PrerequisiteError(f"cannot lock {self.path}: {exc.strerror}",
                                            "use an --output-dir on a local disk.") from None
                if pid is not None and _ours(pid):
                    return
                if (pid is None or not _alive(pid)) and time.monotonic() < deadline:
                    time.sleep(0.001)  # a new holder writes its pid over the dead one's next
                    continue
                who = f"process {pid}" if pid is not None else "another process"
                raise PrerequisiteError(
                    f"run directory {self.path.parent} is in use by {who}",
                    f"wait for it to finish, stop it (kill -INT {pid or 'PID'} saves a checkpoint "
                    "first), or use another --output-dir.") from None
            if _is_file_at(fd, self.path):
                break
            os.close(fd)  # the holder released and deleted this file after we opened it
        if _pid_in(fd) is not None:  # left by a run that died holding the lock
            remove_temp_files(self.path.parent)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        if _is_file_at(self._fd, self.path):  # delete before unlocking: no one else's file
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        if self._depth == 0:
            self.acquire()
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        pass
    return True


def _pid_in(fd: int) -> int | None:
    """The pid written in a lock file, or None if it is empty or garbled."""
    try:
        pid = int(os.pread(fd, 32, 0).split()[0])
    except (ValueError, IndexError):
        return None
    return pid if pid > 0 else None


def _is_file_at(fd: int, path: Path) -> bool:
    """Is the open file ``fd`` the file now at ``path`` (not one deleted since)?"""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)
