"""The command line for scripts: JSON on stdout and nothing else, documented exit codes,
visibly separated samples, and loss curves as a PNG without a display.

Every case runs the real ``tinylm`` command in a subprocess on one tiny trained run.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tinylm import __version__
from tinylm.config import Config, load_preset
from tinylm.stages import Run

CLI = [sys.executable, "-m", "tinylm.cli"]
# 4 epochs: a model that passes every quality check (validation loss below 5), under budgets
# no machine exceeds, so that `tinylm evaluate` has one outcome to check, not two
TINY = dict(bytes_per_language=30_000, vocab_size=512, n_layer=1, n_embd=32, n_head=2,
            block_size=32, batch_size=16, epochs=4, warmup_steps=5, threads=1,
            sample_new_tokens=12, budget_rss_mb=1_000_000, budget_p95_ms=1_000_000)


def tinylm(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    Run(run_dir, load_preset("quick", **TINY), progress=False).train()
    return run_dir


def test_version():
    out = tinylm("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"tinylm {__version__}"


def test_generate_separates_samples_and_names_their_seeds(run_dir):
    out = tinylm("generate", "--output-dir", str(run_dir), "--prompt", "And the", "-n", "3",
                 "--seed", "5")
    assert out.returncode == 0, out.stderr
    headers = [line for line in out.stdout.splitlines() if line.startswith("--- sample")]
    assert headers == [f"--- sample {i + 1} (seed {5 + i}) ---" for i in range(3)]
    one = tinylm("generate", "--output-dir", str(run_dir), "--prompt", "And the", "--seed", "6")
    assert "--- sample" not in one.stdout  # a single sample prints its text alone, as before
    second = out.stdout.split("--- sample 2 (seed 6) ---\n")[1].split("--- sample 3")[0]
    assert second == one.stdout


def test_generate_json_lines(run_dir):
    out = tinylm("generate", "--output-dir", str(run_dir), "--lang", "es", "--prompt", "Y el",
                 "-n", "2", "--temperature", "0.5", "--json")
    assert out.returncode == 0, out.stderr
    samples = [json.loads(line) for line in out.stdout.splitlines()]
    seed = Config.load(run_dir / "config.json").seed  # the run's, as in its samples.json
    assert [s["seed"] for s in samples] == [seed, seed + 1]
    for s in samples:
        assert (s["lang"], s["prompt"], s["temperature"]) == ("es", "Y el", 0.5)
        assert {"text", "top_k", "top_p", "min_p", "repetition_penalty", "sample_new_tokens"} <= set(s)
        assert s["sample_new_tokens"] == TINY["sample_new_tokens"]
        assert isinstance(s["text"], str)
    plain = tinylm("generate", "--output-dir", str(run_dir), "--lang", "es", "--prompt", "Y el",
                   "--temperature", "0.5")
    assert plain.stdout == "Y el" + samples[0]["text"] + "\n"


def test_info_json(run_dir):
    out = tinylm("info", "--output-dir", str(run_dir), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    metrics = json.loads((run_dir / "training_metrics.json").read_text())
    assert info["environment"]["tinylm"] == __version__ and "torch" in info["environment"]
    assert info["run"]["epochs"] == TINY["epochs"] == len(metrics["history"])
    assert info["run"]["final_val_loss"] == metrics["final_val_loss"]
    assert info["run"]["final"]["val_by_lang"].keys() == {"en", "es"}
    assert json.loads(tinylm("info", "--json").stdout)["run"] is None


def test_info_json_on_a_folder_without_a_run(tmp_path):
    out = tinylm("info", "--output-dir", str(tmp_path), "--json")
    assert out.returncode == 1 and out.stdout == ""
    assert "error: " in out.stderr and "what to do: " in out.stderr


def test_evaluate_json(run_dir):
    out = tinylm("evaluate", "--output-dir", str(run_dir), "--requests", "3", "--json")
    report = json.loads(out.stdout)  # the whole of stdout is one JSON object
    assert out.returncode == 0 and report["passed"] is True, out.stderr[-2000:]
    assert "run directory:" in out.stderr and "error: " not in out.stderr  # the summary on stderr
    assert [c["name"] for c in report["checks"]] == [
        "final validation loss", "validation - training loss", "training loss falls every epoch"]
    assert all(c["passed"] for c in report["checks"])
    assert len(report["samples"]["samples"]) == 2 * 3 and report["samples"]["passed"]
    assert [c["name"] for c in report["budgets"]["checks"]] == ["peak RSS", "p95 latency"]
    assert report["budgets"]["passed"]
    assert report["validation"]["val_by_lang"].keys() == {"en", "es"}


def test_evaluate_json_of_a_failed_budget_exits_5(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    Config.load(run / "config.json").replace(budget_rss_mb=50).save(run / "config.json")
    out = tinylm("evaluate", "--output-dir", str(run), "--requests", "3", "--json")
    report = json.loads(out.stdout)
    assert out.returncode == 5 and report["passed"] is False, out.stderr[-2000:]
    rss = report["budgets"]["checks"][0]
    assert (rss["name"], rss["limit"], rss["passed"]) == ("peak RSS", 50, False)  # torch alone is more
    assert all(c["passed"] for c in report["checks"]) and report["samples"]["passed"]
    assert "error: " in out.stderr and "what to do: " in out.stderr and "Traceback" not in out.stderr


def test_evaluate_takes_the_sample_and_budget_settings(run_dir):
    before = (run_dir / "config.json").read_bytes()
    out = tinylm("evaluate", "--output-dir", str(run_dir), "--requests", "3", "--json",
                 "--temperature", "0", "--budget-rss-mb", "100000", "--budget-p95-ms", "90000")
    report = json.loads(out.stdout)
    assert report["samples"]["settings"]["temperature"] == 0.0, out.stderr[-2000:]
    assert {c["name"]: c["limit"] for c in report["budgets"]["checks"]} == \
        {"peak RSS": 100000.0, "p95 latency": 90000.0}
    assert (run_dir / "config.json").read_bytes() == before  # the run's own settings stay


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_writes_a_png(run_dir, tmp_path):
    out = tinylm("plot", "--output-dir", str(run_dir))
    assert out.returncode == 0, out.stderr
    default = run_dir / "loss_curves.png"
    width, height = png_size(default)
    assert width >= 400 and height >= 300 and default.stat().st_size > 10_000
    target = tmp_path / "figures" / "loss.png"
    assert tinylm("plot", "--output-dir", str(run_dir), "--out", str(target)).returncode == 0
    assert png_size(target) == (width, height)


@pytest.mark.parametrize("args, says", [
    (["--out", "loss.pdf"], "does not end in .png"),
    (["--output-dir", "nowhere"], "has no training_metrics.json"),
])
def test_plot_refusals(run_dir, args, says):
    out = tinylm("plot", "--output-dir", str(run_dir), *args)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert says in out.stderr and "what to do: " in out.stderr
