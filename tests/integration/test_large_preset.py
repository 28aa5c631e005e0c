"""The large preset end to end, shrunk to seconds by overrides: five languages from the
embedded corpus or from a folder of files, every one with its tag, its loss and its samples."""
from __future__ import annotations

import json
import subprocess
import sys

from tinylm.config import load_preset
from tinylm.evaluate import PROMPTS
from tinylm.stages import Run

FIVE = ["en", "es", "fr", "de", "it"]
SHRINK = dict(epochs=1, bytes_per_language=20_000, vocab_size=512, n_layer=1, n_embd=32,
              n_head=2, block_size=32, batch_size=16, warmup_steps=5, threads=1,
              sample_new_tokens=8, budget_new_tokens=8)


def test_tinylm_train_large_runs_end_to_end_in_five_languages(tmp_path):
    flags = [x for k, v in SHRINK.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    out = subprocess.run([sys.executable, "-m", "tinylm.cli", "train", "--preset", "large", *flags,
                          "--output-dir", str(tmp_path / "run"), "--quiet"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["name"] == "large" and config["languages"] == FIVE
    assert config["n_layer"] == 1 and config["n_head"] == 2  # the overrides won
    meta = json.loads((run / "tokens" / "meta.json").read_text())
    assert list(meta["special_ids"]) == ["<|endoftext|>", *(f"<|{lang}|>" for lang in FIVE)]
    history = json.loads((run / "training_metrics.json").read_text())["history"]
    assert list(history[-1]["val_by_lang"]) == FIVE
    samples = json.loads((run / "samples.json").read_text())["samples"]
    assert [s["lang"] for s in samples] == [lang for lang in FIVE for _ in range(3)]
    assert all(s["prompt"] in PROMPTS[s["lang"]] for s in samples)
    assert (run / "budgets.json").is_file()


def test_a_folder_of_many_files_in_five_languages_is_one_corpus(tmp_path):
    src = tmp_path / "texts"
    src.mkdir()
    for lang in FIVE:
        for book in range(4):
            paragraphs = (f"{lang} {book} {i} " + "lorem ipsum dolor " * 30 for i in range(12))
            (src / f"book{book}.{lang}.txt").write_text("\n\n".join(paragraphs) + "\n")
    run = Run(tmp_path / "run", load_preset("large", corpus_path=str(src), **SHRINK), progress=False)
    meta = run.tokens()
    stats = json.loads((run.corpus_dir / "stats.json").read_text())
    files = {key.split("#")[0] for split in ("train", "val") for key in stats["keys"][split]}
    assert files == {p.name for p in src.iterdir()}
    for split in ("train", "val"):
        assert list(meta["splits"][split]) == FIVE
        assert [lang for _, _, lang in meta["spans"][split]] == FIVE
