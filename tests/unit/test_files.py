"""Files that must never be half-written or trusted blindly: atomic writes, checksums, locks."""
from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinylm import checkpoint, files
from tinylm.checkpoint import digest_path, load_checkpoint, load_resume_state, save_checkpoint
from tinylm.files import RunLock, atomic_write_bytes, remove_temp_files
from tinylm.errors import CheckpointError, PrerequisiteError

from checkpoints import training_state


def _temps(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*.tmp"))


# ----------------------------------------------------------------- atomic writes
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_atomic_write_gives_normal_permissions_and_no_leftovers(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a" / "x.bin", b"data")
    finally:
        os.umask(old)
    path = tmp_path / "a" / "x.bin"
    assert path.read_bytes() == b"data"
    assert path.stat().st_mode & 0o777 == mode  # what open() would have made, not mkstemp's 0600
    assert _temps(tmp_path) == []


def test_neither_import_nor_writing_touches_the_process_umask(tmp_path):
    """The umask can only be read by setting it, for every thread at once: a file another
    thread created meanwhile would get the wrong permissions."""
    code = textwrap.dedent("""
        import os, sys
        calls = []
        real = os.umask
        os.umask = lambda mask: calls.append(mask) or real(mask)
        from tinylm.files import atomic_write_bytes
        atomic_write_bytes(sys.argv[1], b"x")
        print(calls)
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.bin")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


_PAUSED_SAVE = textwrap.dedent("""
    import os, sys
    import torch
    from tinylm.checkpoint import save_checkpoint

    real_fdopen = os.fdopen

    class Paused:  # stops in the middle of writing the large payload until it is killed
        def __init__(self, f): self.f = f
        def __enter__(self): return self
        def __exit__(self, *a): return self.f.__exit__(*a)
        def write(self, data):
            if len(data) > 100_000:
                self.f.write(data[:len(data) // 4])
                self.f.flush()
                print("mid-write", flush=True)
                sys.stdin.readline()
            self.f.write(data)
        def __getattr__(self, name): return getattr(self.f, name)

    os.fdopen = lambda fd, mode="r", *a, **k: Paused(real_fdopen(fd, mode, *a, **k))
    print("saving", flush=True)
    save_checkpoint(sys.argv[1], {"step": 2, "w": torch.ones(400_000)})
    print("saved", flush=True)
""")


def test_sigkill_during_a_checkpoint_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.zeros(10)})
    before = path.read_bytes()
    child = subprocess.Popen([sys.executable, "-c", _PAUSED_SAVE, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "saving"
        assert child.stdout.readline().strip() == "mid-write", "the save never started"
    finally:
        child.kill()  # SIGKILL, in the middle of the write
        child.wait()
        child.stdin.close()
    assert "saved" not in child.stdout.read()
    partial = [t for t in _temps(tmp_path) if t.name.startswith(".last.pt.")]
    assert len(partial) == 1 and 200_000 < partial[0].stat().st_size < 1_600_000  # cut off mid-write
    assert path.read_bytes() == before  # the real file is the previous one, whole
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.zeros(10))
    # the next run that takes over the dead run's lock sweeps its leftovers away
    (tmp_path / ".lock").write_text(f"{child.pid}\n")
    with RunLock(tmp_path):
        assert _temps(tmp_path) == []
    assert load_checkpoint(path)["step"] == 1


class _Crash(BaseException):
    """A kill at a chosen write of save_checkpoint."""


@pytest.mark.parametrize("crash_at", [0, 1, 2, None])
def test_a_crash_between_the_checkpoint_and_its_checksum_leaves_a_loadable_one(tmp_path, monkeypatch,
                                                                               crash_at):
    """save_checkpoint makes three atomic writes (checksums, checkpoint, checksum); a kill
    before any of them must leave the old or the new checkpoint, never a refused one."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})
    writes = []
    real_bytes = files.atomic_write_bytes

    def counting(p, data):
        if len(writes) == crash_at:
            raise _Crash
        writes.append(Path(p).name)
        real_bytes(p, data)

    monkeypatch.setattr(files, "atomic_write_bytes", counting)  # under atomic_write_text
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", counting)
    if crash_at is None:
        save_checkpoint(path, {"step": 2})
    else:
        with pytest.raises(_Crash):
            save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert writes == ["last.pt.sha256", "last.pt", "last.pt.sha256"][:crash_at]
    expected = 1 if crash_at in (0, 1) else 2
    assert load_checkpoint(path)["step"] == expected
    if crash_at is None:  # a finished save trusts only the new file
        assert digest_path(path).read_text().split() == [hashlib.sha256(path.read_bytes()).hexdigest()]


# ------------------------------------------------------------------- checksums
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[bytes, str]:
    folder = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(folder / "last.pt", {"step": 3, "w": torch.arange(64, dtype=torch.float32)})
    return (folder / "last.pt").read_bytes(), digest_path(folder / "last.pt").read_text()


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_truncation_or_changed_byte_is_refused_naming_file_and_fallback(saved, data):
    good, digest = saved
    if data.draw(st.booleans(), label="truncate"):
        bad = good[:data.draw(st.integers(0, len(good) - 1), label="length")]
    else:
        i = data.draw(st.integers(0, len(good) - 1), label="offset")
        flip = data.draw(st.integers(1, 255), label="xor")
        bad = good[:i] + bytes([good[i] ^ flip]) + good[i + 1:]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "last.pt"
        path.write_bytes(bad)
        digest_path(path).write_text(digest)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
    assert str(path) in err.value.message and "corrupt or truncated" in err.value.message
    assert "best.pt" in err.value.remedy and "--fresh" in err.value.remedy
    assert err.value.exit_code == 4


def test_checkpoint_without_checksum_is_not_trusted(tmp_path):
    save_checkpoint(tmp_path / "best.pt", {"step": 1})
    digest_path(tmp_path / "best.pt").unlink()
    with pytest.raises(CheckpointError, match="no checksum file best.pt.sha256") as err:
        load_checkpoint(tmp_path / "best.pt")
    assert "last.pt" in err.value.remedy


class _Payload:
    """Unpickling this runs code: it creates the file ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_objects_are_refused_even_with_a_matching_checksum(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "final.pt"
    save_checkpoint(path, {"step": 1, "extra": _Payload(str(marker))})  # checksum written too
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "pickled Python objects (io.open)" in err.value.message
    assert "weights_only=True" in err.value.message and err.value.exit_code == 4
    assert not marker.exists()
    # the payload is live: an unsafe load would have run it (so the test above can fail)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_torch_file_that_is_not_a_tinylm_checkpoint_is_refused(tmp_path):
    path = tmp_path / "final.pt"
    torch.save(torch.ones(3), path)
    digest_path(path).write_text(hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(CheckpointError, match="not a tinylm checkpoint"):
        load_checkpoint(path)


def test_resume_state_falls_back_to_best_with_a_warning(tmp_path, capsys):
    save_checkpoint(tmp_path / "best.pt", training_state(5))
    save_checkpoint(tmp_path / "last.pt", training_state(9))
    assert load_resume_state(tmp_path)[0]["step"] == 9
    (tmp_path / "last.pt").write_bytes((tmp_path / "last.pt").read_bytes()[:100])
    state, used = load_resume_state(tmp_path)
    assert state["step"] == 5 and used == tmp_path / "best.pt"
    err = capsys.readouterr().err
    assert "warning:" in err and "last.pt is corrupt or truncated" in err and "best.pt" in err
    (tmp_path / "best.pt").write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        load_resume_state(tmp_path)
    assert "last.pt" in e.value.message and "best.pt" in e.value.message
    assert "--fresh" in e.value.remedy
    for name in ("best.pt", "best.pt.sha256", "last.pt", "last.pt.sha256"):
        (tmp_path / name).unlink()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        load_resume_state(tmp_path)


# ------------------------------------------------------------------------ locks
def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_lock_is_reentrant_and_shared_inside_one_process(tmp_path):
    lock = RunLock(tmp_path)
    with lock:
        with lock:
            with RunLock(tmp_path):  # Trainer.fit inside Run.train
                pass
            assert (tmp_path / ".lock").exists()
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
    assert not (tmp_path / ".lock").exists()


_HOLD = textwrap.dedent("""
    import sys
    from tinylm.files import RunLock, adopt_parent_lock
    from tinylm.errors import TinyLMError
    adopt_parent_lock()  # as every entry point does (a chapter's kernel, a rank)
    try:
        with RunLock(sys.argv[1]):
            print("locked", flush=True)
            sys.stdin.read()  # hold it until the parent closes our stdin
    except TinyLMError as exc:
        print(exc.message, flush=True)
""")


def _holder(run_dir: Path, **env: str) -> subprocess.Popen:
    """A process that holds the lock of ``run_dir`` until its stdin is closed."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(run_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_while_the_first_holds_the_lock(tmp_path):
    first = _holder(tmp_path)
    try:
        second = subprocess.run([sys.executable, "-c", _HOLD, str(tmp_path)], input="",
                                capture_output=True, text=True, timeout=60)
        assert f"is in use by process {first.pid}" in second.stdout
        with pytest.raises(PrerequisiteError) as err:
            RunLock(tmp_path).acquire()
        assert f"kill -INT {first.pid}" in err.value.remedy and err.value.exit_code == 1
    finally:
        first.stdin.close()
        first.wait(timeout=60)
    assert not (tmp_path / ".lock").exists()  # released on exit
    with RunLock(tmp_path):
        pass


def test_stale_locks_are_cleared(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{dead.pid} 1.0\n")
    (tmp_path / "checkpoints").mkdir()
    leftover = tmp_path / "checkpoints" / ".last.pt.abc123.tmp"
    leftover.write_bytes(b"half a checkpoint")
    keep = tmp_path / "checkpoints" / "last.pt"
    keep.write_bytes(b"whole")
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
    assert not leftover.exists() and keep.read_bytes() == b"whole"


def test_a_sigkilled_holder_does_not_block_the_next_run(tmp_path):
    holder = _holder(tmp_path)
    with pytest.raises(PrerequisiteError, match=f"in use by process {holder.pid}"):
        RunLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    holder.stdin.close()
    assert (tmp_path / ".lock").read_text().split()[0] == str(holder.pid)  # left behind
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
    assert not (tmp_path / ".lock").exists()


def test_a_reused_pid_does_not_keep_a_lock_alive(tmp_path):
    """A lock file naming a live process that does not hold the lock (a dead run's pid,
    since reused by another program) is taken over: only the kernel's lock counts."""
    other = _sleeper()
    try:
        (tmp_path / ".lock").write_text(f"{other.pid}\n")
        with RunLock(tmp_path):
            assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
    finally:
        other.kill()
        other.wait()


def test_a_chapter_kernel_shares_the_lock_of_the_pipeline_that_started_it(tmp_path):
    with RunLock(tmp_path):  # this process plays the pipeline
        kernel = _holder(tmp_path, TINYLM_LOCK_PID=str(os.getpid()))
        kernel.stdin.close()
        assert kernel.wait(timeout=60) == 0
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())  # still ours
        stranger = subprocess.run([sys.executable, "-c", _HOLD, str(tmp_path)], input="",
                                  capture_output=True, text=True, timeout=60,
                                  env={**os.environ, "TINYLM_LOCK_PID": "1"})
        assert f"is in use by process {os.getpid()}" in stranger.stdout


def test_checkpoint_imports_without_fcntl():
    """Only taking a lock needs fcntl (POSIX); saving and loading work without it."""
    code = "import sys; sys.modules['fcntl'] = None; import tinylm.files, tinylm.checkpoint"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_a_garbled_lock_file_is_taken_over(tmp_path):
    (tmp_path / ".lock").write_text("")
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())


def test_remove_temp_files_only_touches_temporary_files(tmp_path):
    (tmp_path / "a").mkdir()
    names = [".x.json.123.tmp", "a/.tokenizer.json.9.tmp", "x.tmp", "a/.hidden", "a/last.pt"]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = {p.relative_to(tmp_path).as_posix() for p in remove_temp_files(tmp_path)}
    assert removed == {".x.json.123.tmp", "a/.tokenizer.json.9.tmp"}
    assert all((tmp_path / n).exists() for n in names if n not in removed)


def test_pickle_module_error_type_is_what_torch_raises(tmp_path):
    """load_checkpoint tells pickled objects apart by this type; keep it honest."""
    path = tmp_path / "x.pt"
    torch.save({"x": _Payload(str(tmp_path / "m"))}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


_RACE = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from tinylm.files import RunLock
    from tinylm.errors import TinyLMError
    lock = RunLock(sys.argv[1])
    print("ready", flush=True)
    os.read(int(sys.argv[2]), 1)  # returns when the parent closes the pipe: all start at once
    try:
        lock.acquire()
    except TinyLMError as exc:
        print("refused", exc.message, flush=True)
        sys.exit()
    Path(sys.argv[1], "checkpoints", f".work.{os.getpid()}.tmp").write_text("a write in progress")
    print("locked", flush=True)
    sys.stdin.readline()  # hold it until the parent says so
    lock.release()
""")


@pytest.mark.parametrize("attempt", range(3))  # a race: each attempt is another chance to lose it
def test_contenders_for_a_stale_lock_end_with_one_holder_whose_files_survive(tmp_path, attempt):
    """Processes that find the same dead owner must not delete each other's lock or files.

    The run directory is big, so removing the dead run's temporary files takes a while: a
    contender still at it once another has taken the lock would delete the new holder's.
    """
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{dead.pid} 1.0\n")
    for i in range(300):
        (tmp_path / f"d{i}").mkdir()
        for j in range(5):
            (tmp_path / f"d{i}" / f"f{j}").write_text("x")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".last.pt.dead.tmp").write_text("left by the dead run")
    go, start = os.pipe()
    contenders = [subprocess.Popen([sys.executable, "-c", _RACE, str(tmp_path), str(go)], pass_fds=[go],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                  for _ in range(4)]
    os.close(go)
    try:
        ready = [c.stdout.readline().strip() for c in contenders]
    finally:
        os.close(start)  # every contender tries now
    try:
        assert ready == ["ready"] * 4
        answers = {c.pid: c.stdout.readline().strip() for c in contenders}
        holders = [pid for pid, answer in answers.items() if answer == "locked"]
        assert len(holders) == 1, answers
        (holder,) = holders
        assert all(answers[pid] == f"refused run directory {tmp_path} is in use by process {holder}"
                   for pid in answers if pid != holder), answers
        assert (tmp_path / ".lock").read_text().split()[0] == str(holder)
        assert _temps(tmp_path) == [tmp_path / "checkpoints" / f".work.{holder}.tmp"]  # the dead run's are gone
    finally:
        for c in contenders:
            c.stdin.close()
            c.wait(timeout=60)
    assert not (tmp_path / ".lock").exists()


def test_a_chapter_kernels_own_children_do_not_share_the_pipelines_lock(tmp_path):
    """TINYLM_LOCK_PID reaches the kernel only: a process the kernel starts (a command run
    from a notebook) is refused like any other while the pipeline holds the run."""
    kernel = textwrap.dedent("""
        import os, subprocess, sys
        from tinylm.files import RunLock, adopt_parent_lock
        adopt_parent_lock()
        with RunLock(sys.argv[1]):  # shared with the pipeline
            print("kernel shares", flush=True)
        child = subprocess.run([sys.executable, "-c", sys.argv[2], sys.argv[1]], input="",
                               capture_output=True, text=True, timeout=60)
        print(child.stdout, flush=True)
    """)
    with RunLock(tmp_path):  # this process plays the pipeline
        out = subprocess.run([sys.executable, "-c", kernel, str(tmp_path), _HOLD], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "TINYLM_LOCK_PID": str(os.getpid())})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("kernel shares\n")
    assert f"is in use by process {os.getpid()}" in out.stdout and "locked" not in out.stdout


def _victim_and_run(tmp_path: Path) -> tuple[Path, Path]:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "run").mkdir()
    return victim, tmp_path / "run"


def test_a_link_planted_as_the_lock_is_refused_not_truncated(tmp_path):
    """In a shared folder, a symbolic link named .lock must not make tinylm truncate the
    file it points to and write its pid there."""
    victim, run_dir = _victim_and_run(tmp_path)
    (run_dir / ".lock").symlink_to(victim)
    with pytest.raises(PrerequisiteError, match="symbolic link") as err:
        RunLock(run_dir).acquire()
    assert "another --output-dir" in err.value.remedy
    assert victim.read_text() == "precious\n"


def test_the_write_probe_never_writes_through_a_planted_link(tmp_path):
    from tinylm.config import Config
    from tinylm.stages import Run

    victim, run_dir = _victim_and_run(tmp_path)
    (run_dir / ".write-test").symlink_to(victim)
    Run(run_dir, Config())._check_writable()
    assert victim.read_text() == "precious\n"


def test_a_write_probe_leaves_another_processs_probe_alone(tmp_path):
    """Chapters run side by side check the same run directory: one process's probe must
    not be the file another is writing or about to delete (which then fails as "not
    writable")."""
    from tinylm.config import Config
    from tinylm.stages import Run

    theirs = tmp_path / ".write-test"  # a probe another process has just written
    theirs.write_text("theirs")
    Run(tmp_path, Config())._check_writable()
    assert theirs.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".write-test"]


def test_the_sweep_after_a_dead_holder_removes_only_tinylms_temporary_files(tmp_path):
    """With a broad --output-dir, the folder holds other programs' files: the sweep takes
    the names atomic_write_bytes makes, in the run and its stage folders, nothing deeper."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "photos" / "2024").mkdir(parents=True)
    ours = [tmp_path / ".config.json.0a1b2c3d.tmp", tmp_path / "checkpoints" / ".last.pt.deadbeef.tmp"]
    theirs = [tmp_path / "photos" / "2024" / ".img.0a1b2c3d.tmp", tmp_path / ".draft.tmp",
              tmp_path / "checkpoints" / ".notes.v2.tmp", tmp_path / ".editor.swp.tmp"]
    for path in ours + theirs:
        path.write_text("x")
    (tmp_path / ".lock").write_text("999999999\n")  # a holder that died
    with RunLock(tmp_path):
        pass
    assert not any(p.exists() for p in ours)
    assert all(p.read_text() == "x" for p in theirs)
