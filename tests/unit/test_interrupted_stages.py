"""A stage stopped half-way (Ctrl-C, a full disk) is never taken as current: not by the
configuration that was rebuilding it, nor by the one whose outputs it was replacing."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tinylm import files
from tinylm.checkpoint import save_checkpoint
from tinylm.config import load_preset
from tinylm.corpus import read_documents
from tinylm.errors import PrerequisiteError
from tinylm.stages import Run



def texts(folder, documents: int):
    """Own corpus files: ``documents`` documents per language, each a distinct paragraph."""
    folder.mkdir()
    for lang in ("en", "es"):
        paragraphs = (f"{lang} document {i}: " + f"word{i} {lang}{i} " * 300 for i in range(documents))
        (folder / f"book.{lang}.txt").write_text("\n\n".join(paragraphs))
    return str(folder)


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    """Run A, and run B: five times its text, half of it held out, another shuffle."""
    root = tmp_path_factory.mktemp("texts")
    a = load_preset("quick", corpus_path=texts(root / "a", 12), vocab_size=300, n_layer=1,
                    n_embd=16, n_head=2, block_size=16, batch_size=8, epochs=1, warmup_steps=5,
                    threads=1)
    return a, a.replace(corpus_path=texts(root / "b", 60), val_fraction=0.5, seed=7)


def fail_writing(monkeypatch, name: str, how: str) -> None:
    """Make the write of the file ``name`` fail: Ctrl-C, or the kernel's ENOSPC (/dev/full)."""
    real = files._new_temp_file

    def new_temp_file(path):
        if path.name != name:
            return real(path)
        if how == "interrupt":
            raise KeyboardInterrupt
        return os.open("/dev/full", os.O_WRONLY), path.parent / f".{name}.full{files.TMP_SUFFIX}"

    monkeypatch.setattr(files, "_new_temp_file", new_temp_file)


def keys_of(path) -> list[str]:
    return [text.split(":")[0] for _, text in read_documents(path)]


@pytest.mark.parametrize("how", ["interrupt", "disk full"])
def test_a_corpus_rebuild_stopped_between_its_files_is_not_current_for_anyone(tmp_path, monkeypatch,
                                                                               configs, how):
    A, B = configs
    run_a = Run(tmp_path / "run", A, progress=False)
    run_a.corpus()
    train_a = (run_a.corpus_dir / "train.txt").read_bytes()
    val_a = set(keys_of(run_a.corpus_dir / "val.txt"))
    fail_writing(monkeypatch, "val.txt", how)
    run_b = Run(tmp_path / "run", B, progress=False)
    with pytest.raises(KeyboardInterrupt if how == "interrupt" else PrerequisiteError) as err:
        run_b.corpus()  # B's train.txt is in place, A's val.txt still beside it
    if how == "disk full":
        assert "disk filled up" in err.value.message and "free some space" in err.value.remedy
    monkeypatch.undo()
    assert not run_b.is_current("corpus", run_b.corpus_dir)
    assert not run_a.is_current("corpus", run_a.corpus_dir)
    run_a.corpus()  # rebuilt: no validation document of A among the training documents
    assert (run_a.corpus_dir / "train.txt").read_bytes() == train_a
    assert not val_a & set(keys_of(run_a.corpus_dir / "train.txt"))


@pytest.mark.parametrize("how", ["interrupt", "disk full"])
def test_token_files_half_made_by_another_tokenizer_are_not_current(tmp_path, monkeypatch, configs,
                                                                     how):
    A, _ = configs
    run_a = Run(tmp_path / "run", A, progress=False)
    run_a.tokens()
    train_bin = (run_a.tokens_dir / "train.bin").read_bytes()
    fail_writing(monkeypatch, "val.bin", how)
    with pytest.raises((KeyboardInterrupt, PrerequisiteError)):
        Run(tmp_path / "run", A.replace(vocab_size=400), progress=False).tokens()
    monkeypatch.undo()
    assert not run_a.is_current("tokens", run_a.tokens_dir)
    run_a.tokens()
    assert (run_a.tokens_dir / "train.bin").read_bytes() == train_bin


def test_a_final_model_replaced_after_its_stamp_is_not_the_trained_model(tmp_path, configs):
    run = Run(tmp_path / "run", configs[0].replace(batch_size=64), progress=False)
    run.train()
    assert run.is_trained()
    save_checkpoint(run.checkpoints_dir / "final.pt", {"step": 0})  # another training's end
    assert not run.is_trained()


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (as root, where mounting is allowed), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root; the /dev/full cases above fail the OS write")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tinylm-test", str(disk)],
                             capture_output=True, timeout=30)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


def test_a_disk_that_fills_up_during_the_corpus_leaves_nothing_current(tmp_path, small_disk,
                                                                        monkeypatch, configs):
    """A real ENOSPC: another process fills the disk once the free-space check has passed,
    leaving room for B's train.txt but not for its val.txt."""
    A, B = configs
    scratch = Run(tmp_path / "scratch", B, progress=False)
    scratch.corpus()
    page = os.statvfs(small_disk).f_frsize
    room = (-(-(scratch.corpus_dir / "train.txt").stat().st_size // page) + 2) * page
    run_a = Run(small_disk / "run", A, progress=False)
    run_a.corpus()
    train_a = (run_a.corpus_dir / "train.txt").read_bytes()
    filler = small_disk / "filler"
    real_check = Run._require_disk

    def check_then_fill(self, *args, **kwargs):
        real_check(self, *args, **kwargs)
        st = os.statvfs(small_disk)
        filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - room))

    monkeypatch.setattr(Run, "_require_disk", check_then_fill)
    run_b = Run(small_disk / "run", B, progress=False)
    with pytest.raises(PrerequisiteError) as err:
        run_b.corpus()
    assert "No space left on device" in err.value.message and "free some space" in err.value.remedy
    assert (run_b.corpus_dir / "train.txt").read_bytes() != train_a  # it failed half-way
    monkeypatch.undo()
    filler.unlink()
    assert not run_a.is_current("corpus", run_a.corpus_dir)
    assert not run_b.is_current("corpus", run_b.corpus_dir)
    run_a.corpus()
    assert (run_a.corpus_dir / "train.txt").read_bytes() == train_a


def test_a_corpus_file_edited_while_it_is_read_is_not_taken_as_read(tmp_path, monkeypatch, configs):
    """The stamp names the files as they were when the stage began, not as they are after."""
    import tinylm.corpus

    own = tmp_path / "own"
    shutil.copytree(configs[0].corpus_path, own)
    real = tinylm.corpus._read_text

    def read_then_edit(path, name):
        text = real(path, name)
        with open(path, "a") as f:
            f.write("\n\nwritten while the corpus stage ran")
        return text

    monkeypatch.setattr(tinylm.corpus, "_read_text", read_then_edit)
    run = Run(tmp_path / "run", configs[0].replace(corpus_path=str(own)), progress=False)
    run.corpus()
    monkeypatch.undo()
    assert not run.is_current("corpus", run.corpus_dir)
    run.corpus()
    assert run.is_current("corpus", run.corpus_dir)
    assert "written while the corpus stage ran" in (run.corpus_dir / "train.txt").read_text() + \
        (run.corpus_dir / "val.txt").read_text()
