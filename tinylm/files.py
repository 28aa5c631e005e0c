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
import re
import stat
import time
from pathlib import Path
from typing import Any

from tinylm.errors import PrerequisiteError

TMP_SUFFIX = ".tmp"  # temporary files are ".<name>.<random hex>.tmp" beside their target
_TEMP_NAME = re.compile(rf"\..+\.[0-9a-f]+{re.escape(TMP_SUFFIX)}")
#: Names the process that holds a run's lock, for the process it starts to share it.
LOCK_PID = "TINYLM_LOCK_PID"
_shared_with: int | None = None  # the parent whose lock this process shares (adopt_parent_lock)


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


def probe_writable(folder: Path) -> None:
    """Raise ``OSError`` unless a file can be created in ``folder``.

    The probe's name is this probe's own and it is created new (``O_EXCL``), so concurrent
    probes never remove each other's file, and a symbolic link planted under a probe's name
    is never followed to truncate its target.
    """
    probe = Path(folder) / f".write-test.{os.getpid()}.{os.urandom(4).hex()}"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666))
    probe.unlink()


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
    process the lock is shared and re-entrant (``distributed.train_in_processes`` holds it
    while the stages it builds take it again). A process whose parent holds the lock (the
    pipeline running a chapter in a Jupyter kernel) names that parent in ``TINYLM_LOCK_PID``
    and shares the lock instead of refusing (``adopt_parent_lock``).
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
            fd = self._open()
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

    def _open(self) -> int:
        """The lock file, opened (created if missing) without following a symbolic link: a
        link planted in a shared folder would have the lock truncate its target."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError:
            if not self.path.is_symlink():
                raise
        else:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
            os.close(fd)
        raise PrerequisiteError(f"{self.path} is a symbolic link or not a plain file, so tinylm "
                                "does not write it",
                                f"remove {self.path} if it is not yours, or use another --output-dir.")

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
    """Delete the temporary files that killed writers left in ``folder`` and its folders.

    Only what ``atomic_write_bytes`` creates: plain files named ``.<name>.<hex>.tmp``, in
    ``folder`` and one level down (a run's stage folders), never through a symbolic link,
    so that a run in a shared folder leaves other programs' files alone.
    """
    folder = Path(folder)
    removed = []
    for where in [folder, *(d for d in folder.iterdir() if d.is_dir() and not d.is_symlink())]:
        for tmp in where.iterdir():
            if _TEMP_NAME.fullmatch(tmp.name) and tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def adopt_parent_lock() -> None:
    """Share the lock of the process that started this one, named in ``TINYLM_LOCK_PID``,
    and take the name out of the environment, so that the processes this one starts (a
    chapter's own subprocess, a command run from a notebook) take the lock like any other.

    Called by the entry points a lock holder starts: a chapter's kernel (``chapter_run``)
    and a process of a data-parallel run (``tinylm train`` under torchrun).
    """
    global _shared_with
    value = os.environ.pop(LOCK_PID, "")
    if value.isdigit():
        _shared_with = int(value)


def _ours(pid: int) -> bool:
    return pid == os.getpid() or pid == _shared_with


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
