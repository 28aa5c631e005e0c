"""Files written whole or not at all, their checksums, and the run directory's lock.

Every file tinylm writes goes through ``atomic_write_*``: write a temporary file beside the
target, flush and fsync it, then ``os.replace`` it into place, so a kill at any moment leaves
the previous good file. ``RunLock`` keeps two processes from writing the same run directory.
Standard library only: every layer of tinylm writes files, and none of this needs torch.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from tinylm.errors import PrerequisiteError

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

    def held_by_parent(self) -> bool:
        """True when the process that started this one holds the lock and shares it
        (``TINYLM_LOCK_PID``): the pipeline, for the chapters it runs in its kernels."""
        try:
            pid = int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        return pid != os.getpid() and _ours(pid) and _alive(pid)

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
