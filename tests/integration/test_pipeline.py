"""`tinylm pipeline`: the chapters executed headless are the training pipeline."""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tinylm.book_build import stale_chapters
from tinylm.pipeline import BOOK_DIR, CONCURRENT
from tinylm.runtime import physical_cores

TINYLM = [sys.executable, "-m", "tinylm.cli"]
ARTIFACTS = ["config.json", "corpus/train.txt", "corpus/val.txt", "corpus/stats.json",
             "tokenizer/tokenizer.json", "tokens/train.bin", "tokens/val.bin", "tokens/meta.json",
             "checkpoints/last.pt", "checkpoints/best.pt", "checkpoints/final.pt",
             "training_metrics.json", "samples.json", "budgets.json"]


def tinylm(*args, cwd=None, timeout=900):
    return subprocess.run([*TINYLM, *args], capture_output=True, text=True, cwd=cwd,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def _chapters_folder() -> set[str]:
    """What the chapters' folder holds, but Python's bytecode cache (its diagrams module)."""
    return {p.name for p in BOOK_DIR.iterdir() if p.name != "__pycache__"}


def _emptied(folder: str) -> Path:
    """``folder`` without what an earlier run left there (finished or not: the pipeline makes
    ``notebooks/`` first); only a run directory is emptied."""
    path = Path(folder).resolve()
    if path.exists():
        is_run = (path / "config.json").is_file() or (path / "notebooks").is_dir()
        assert is_run or not any(path.iterdir()), \
            f"TINYLM_PIPELINE_TEST_DIR={folder} holds files that are not a tinylm run"
        shutil.rmtree(path)
    return path


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The quick pipeline from scratch, in a temporary folder or where TINYLM_PIPELINE_TEST_DIR
    says (`make test`: the book's run, which `make book` renders without executing it again)."""
    folder = os.environ.get("TINYLM_PIPELINE_TEST_DIR")
    run_dir = _emptied(folder) if folder else tmp_path_factory.mktemp("pipeline") / "quick"
    before = _chapters_folder()
    out = tinylm("pipeline", "--preset", "quick", "--output-dir", str(run_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    # the kernels run in the chapters' folder (read-only in some installs): nothing written there
    assert _chapters_folder() == before
    return run_dir, out


def test_pipeline_writes_every_artifact_and_executed_chapter(quick_run):
    run_dir, out = quick_run
    for name in ARTIFACTS:
        assert (run_dir / name).is_file(), name
    notebooks = sorted((run_dir / "notebooks").glob("*.ipynb"))
    assert [nb.stem[:2] for nb in notebooks] == [f"{i:02d}" for i in range(1, 12)]
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert any(c.outputs for c in code), f"{path.name} has no outputs"
        errors = [o for c in code for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{path.name}: {errors[0]['ename']}"
        injected = [c for c in code if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and str(run_dir.resolve()) in injected[0].source
    metrics = json.loads((run_dir / "training_metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["hyperparameters"]["name"] == "quick"
    assert len(metrics["history"]) == metrics["hyperparameters"]["epochs"]
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]
    record = json.loads((run_dir / "pipeline.json").read_text())  # the run's own time record
    assert list(record["chapters"]) == [nb.stem for nb in notebooks]
    assert record["command_seconds"] >= record["total_seconds"] >= max(record["chapters"].values())
    if physical_cores() >= 2:  # once trained, chapters ran two at a time: the first two at once
        first, second = CONCURRENT[:2]
        assert out.stderr.index(f"== chapter {second}") < out.stderr.index(f"{first} done in")
    assert stale_chapters(run_dir) == []  # each stamped as executed with the sources as they are
    # phase headers, and a closing summary with artifacts and the total time
    assert "== chapter 05_training" in out.stderr
    assert "pipeline finished in" in out.stdout and "final.pt" in out.stdout
    # the kernels talk over local sockets: no warning about unencrypted TCP, once per chapter
    assert "without encryption" not in out.stderr


#: A library's noise in a cell's stderr: Python's warnings (UserWarning, TqdmWarning: "IProgress
#: not found"), logging's "warning", transformers' loading bars, a traceback printed and survived.
NOISE = re.compile(r"warn|IProgress|Loading weights|Traceback", re.IGNORECASE)
WIDGET = "application/vnd.jupyter.widget-view+json"


def noise_in(path: Path) -> list[str]:
    """The warnings in an executed chapter's stderr outputs, and any widget among its outputs (a
    headless run's progress is text: the book cannot render a widget that no kernel serves)."""
    found = []
    for cell in nbformat.read(path, as_version=4).cells:
        for out in cell.get("outputs", []):
            where = f"{path.stem}, cell {cell.get('id')}"
            if out.output_type == "stream" and out.name == "stderr":
                found += [f"{where}: {line.strip()[:200]}" for line in out.text.splitlines() if NOISE.search(line)]
            if WIDGET in out.get("data", {}):
                found.append(f"{where}: a widget output")
    return found


def test_the_chapters_that_build_a_model_of_their_own_follow_rotary_positions(tmp_path):
    """The quick preset keeps GPT-2's learned positions, the default's are rotary: chapter 3
    builds its own GPT and chapter 5 a tiny one beside the library's, each for the run's
    architecture, and must compute the library's numbers with rotary positions too."""
    run_dir = tmp_path / "rotary"
    out = tinylm("pipeline", "--preset", "quick", "--positions", "rotary", "--chapters", "3,5",
                 "--output-dir", str(run_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    nb = nbformat.read(run_dir / "notebooks" / "03_model.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.outputs)
    assert "rotary positions; logits" in printed and "allclose: True" in printed
    assert "same as the library's Rotary: True" in printed


def test_executed_chapters_hold_no_warnings_and_no_widgets(quick_run):
    run_dir, _ = quick_run
    noise = [line for path in sorted((run_dir / "notebooks").glob("*.ipynb")) for line in noise_in(path)]
    assert not noise, "\n".join(noise)


def test_prose_that_code_writes_ends_each_sentence_once(quick_run):
    """The captions and sentences a chapter's code writes (Markdown outputs) join clauses
    that may be empty; an empty one must not leave a doubled full stop behind."""
    run_dir, _ = quick_run
    doubled = [f"{path.stem}, cell {cell.get('id')}: {m.group(0)}"
               for path in sorted((run_dir / "notebooks").glob("*.ipynb"))
               for cell in nbformat.read(path, as_version=4).cells
               for out in cell.get("outputs", [])
               for m in re.finditer(r".{0,60}\w\.\.(?=\s|$)", out.get("data", {}).get("text/markdown", ""))]
    assert not doubled, "\n".join(doubled)


def test_unchanged_stages_are_skipped(quick_run):
    """Chapter 7 opens the run's every stage (corpus, tokenizer, tokens, training) through
    ``run.train()``, as any chapter after training does; it is one of the shortest."""
    run_dir, _ = quick_run
    before = {p: (run_dir / p).stat().st_mtime_ns for p in
              ("corpus/train.txt", "tokenizer/tokenizer.json", "tokens/train.bin", "checkpoints/final.pt")}
    out = tinylm("pipeline", "--preset", "quick", "--output-dir", str(run_dir), "--chapters", "7")
    assert out.returncode == 0, out.stderr[-2000:]
    after = {p: (run_dir / p).stat().st_mtime_ns for p in before}
    assert after == before
    started = [line.split(" (")[0] for line in out.stderr.splitlines() if line.startswith("== ")]
    assert started == ["== chapter 07_evaluation"]  # and no stage


def test_existing_checkpoints_without_resume_and_without_terminal_stop(quick_run):
    run_dir, _ = quick_run
    final = run_dir / "checkpoints" / "final.pt"
    stamp = final.stat().st_mtime_ns
    out = tinylm("pipeline", "--preset", "quick", "--epochs", "4", "--output-dir", str(run_dir),
                 "--chapters", "5")
    assert out.returncode == 1
    assert "--resume" in out.stderr and "--fresh" in out.stderr and "Traceback" not in out.stderr
    assert "estimate:" not in out.stderr  # refused before seconds of measuring this machine
    assert final.stat().st_mtime_ns == stamp  # nothing was touched


def test_failed_budget_stops_the_pipeline_with_exit_5(quick_run, tmp_path):
    run_dir = tmp_path / "copy"  # a copy: the run itself stays complete and passing
    shutil.copytree(quick_run[0], run_dir)
    out = tinylm("pipeline", "--preset", "quick", "--output-dir", str(run_dir), "--chapters", "10",
                 "--budget-p95-ms", "1")
    assert out.returncode == 5, out.stderr[-2000:]
    assert "chapter 10_budgets failed" in out.stderr and "p95 latency" in out.stderr
    assert "Traceback" not in out.stderr
    budgets = json.loads((run_dir / "budgets.json").read_text())
    assert budgets["passed"] is False and budgets["checks"][1]["limit"] == 1


def test_samples_stay_in_their_language_and_in_words(quick_run):
    """benchmarks/quality/sample_language.py on the quick run: an outside detector (langid) finds
    the requested language, and most generated words occur in the training text. The quick
    model is small, so the thresholds here are lower than the default model's targets."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "quality" / "sample_language.py"
    spec = importlib.util.spec_from_file_location("sample_language", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    run_dir, _ = quick_run
    result = bench.census(run_dir, per_language=6)
    assert result["samples_total"] == 12
    assert result["in_language"] >= 10, [(s["lang"], s["detected"], s["text"][:60]) for s in result["samples"]]
    assert result["known_word_share"] >= 0.6
    assert 0 < result["distinct_word_share"] <= 1
    assert (result["temperature"], result["min_p"]) == (0.8, 0.05)  # the run's own
    assert result["open_in_capitals"] <= 1
    assert 0 <= result["repeated_4grams_mean"] <= result["repeated_4grams_max"] <= 1
    # a sampler setting given replaces the run's, the others stay the run's
    other = bench.census(run_dir, per_language=2, top_p=0.5, min_p=0.0, repetition_penalty=1.0)
    assert (other["top_p"], other["min_p"], other["repetition_penalty"], other["temperature"]) \
        == (0.5, 0.0, 1.0, 0.8)
    first = [r["samples"][0] for r in (result, other)]  # English, no prompt, seed 0
    assert first[0]["seed"] == first[1]["seed"] and first[0]["text"] != first[1]["text"]
    # --grid: each setting on every run given, with the runs' totals
    row = bench.grid_census([run_dir, run_dir], 1, bench.sampler_setting("temperature=0.9,min_p=0"))
    assert row["sampling"] == {"temperature": 0.9, "min_p": 0.0}
    assert [(r["temperature"], r["min_p"], r["top_p"]) for r in row["runs"]] == [(0.9, 0.0, 0.95)] * 2
    assert row["samples_total"] == 4 and "samples" not in row["runs"][0]
    assert row["mean_known_word_share"] == row["runs"][0]["known_word_share"]  # the same run twice
    for wrong in ("top_k=5", "temperature:0.9", "min_p=low"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.sampler_setting(wrong)
