"""`tinylm pipeline` refusing bad input: flags checked before any work, and a chapter that
fails names itself, its cell and the error's exit code. Apart from test_pipeline.py, whose
tests share one trained run, so that a second test worker can take these."""
import subprocess
import sys

TINYLM = [sys.executable, "-m", "tinylm.cli"]


def tinylm(*args, cwd=None, timeout=900):
    return subprocess.run([*TINYLM, *args], capture_output=True, text=True, cwd=cwd,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def test_failing_chapter_names_chapter_cell_and_exit_code(tmp_path):
    out = tinylm("pipeline", "--preset", "quick", "--output-dir", str(tmp_path / "run"),
                 "--corpus-path", str(tmp_path / "missing.en.txt"), "--languages", "en",
                 "--chapters", "1")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "chapter 01_overview failed in cell" in out.stderr
    assert "CorpusError" in out.stderr and "Traceback" not in out.stderr
    assert str(tmp_path / "run" / "notebooks" / "01_overview.ipynb") in out.stderr


def test_flags_are_validated_before_any_work(tmp_path):
    for args, code, words in ((["--epochs", "0"], 1, "epochs"), (["--chapters", "12"], 1, "chapter"),
                              (["--learning-rate", "5"], 1, "learning_rate"),
                              (["--preset", "nope"], 1, "unknown preset")):
        out = tinylm("pipeline", "--output-dir", str(tmp_path / "r"), *args)
        assert out.returncode == code and words in out.stderr, (args, out.stderr)
        assert "estimate:" not in out.stderr  # no seconds of measurement before the refusal
        assert not (tmp_path / "r" / "notebooks").exists()


def test_help_explains_values_with_examples():
    out = tinylm("pipeline", "--help")
    assert out.returncode == 0
    for flag in ("--preset", "--epochs", "--batch-size", "--learning-rate", "--vocab-size",
                 "--languages", "--corpus-path", "--output-dir", "--skip-corpus",
                 "--skip-tokenizer", "--resume", "--chapters", "examples:", "memory"):
        assert flag in out.stdout, flag
