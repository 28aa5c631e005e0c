"""What a chapter and a fresh training do with a run folder that already holds a model: a
named folder is opened as it is, a model nobody asked to replace is never trained over, and
a fresh start removes everything the old model produced (and only tinylm's files)."""
from __future__ import annotations

import json
import shutil

import pytest

from tinylm.config import load_preset
from tinylm.errors import ConfigError, TrainingError
from tinylm.pipeline import chapter_run
from tinylm.stages import Run

TINY = dict(vocab_size=300, n_layer=1, n_embd=16, n_head=2, block_size=16, batch_size=64,
            warmup_steps=5, threads=1)


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A folder D where chapter 5 trained with config = {"epochs": 2} (and small settings)."""
    root = tmp_path_factory.mktemp("runs")
    folder = root / "texts"
    folder.mkdir()
    for lang in ("en", "es"):
        (folder / f"book.{lang}.txt").write_text("\n\n".join(
            f"{lang} document {i}: " + f"word{i} {lang}{i} " * 300 for i in range(12)))
    config = {**TINY, "corpus_path": str(folder), "epochs": 2}
    run = chapter_run(root / "D", config, False)
    run.train()
    return run.dir, config


@pytest.fixture
def d(trained, tmp_path):
    shutil.copytree(trained[0], tmp_path / "D")
    return tmp_path / "D", trained[1]


def test_an_empty_config_opens_a_named_run_as_it_is(d):
    """Chapter 6 with the same folder, config = {} and resume = False trained a new
    3-epoch model over chapter 5's 2 epochs."""
    folder, config = d
    before = snapshot(folder)
    run = chapter_run(folder, {}, False)
    assert run.cfg.epochs == 2 and run.cfg.to_dict() == json.loads((folder / "config.json").read_text())
    assert run.is_trained()
    run.train()
    assert snapshot(folder) == before


@pytest.mark.parametrize("change, resume, error, says", [
    ({"epochs": 3}, False, ConfigError, "epochs: 2.0 there, 3.0 here"),
    ({"n_layer": 2}, False, ConfigError, "n_layer: 1 there, 2 here"),
    ({"n_layer": 2}, True, TrainingError, "n_layer"),
])
def test_other_settings_never_train_over_a_named_runs_model(d, change, resume, error, says):
    folder, config = d
    before = snapshot(folder)
    with pytest.raises(error, match=says) as err:
        chapter_run(folder, {**config, **change}, resume)
    if error is ConfigError:
        assert "resume = True" in err.value.remedy and "run_dir" in err.value.remedy
    assert snapshot(folder) == before


def test_a_resumable_change_with_resume_continues(d):
    folder, config = d
    run = chapter_run(folder, {**config, "epochs": 3, "temperature": 0.5}, True)
    assert run.cfg.epochs == 3 and not run.is_trained()
    assert chapter_run(folder, {**config, "temperature": 0.5}, False).is_trained()  # no retraining


def test_an_unfinished_model_is_not_restarted_without_being_asked(d):
    folder, config = d
    for name in ("final.pt", "final.pt.sha256"):
        (folder / "checkpoints" / name).unlink()
    before = snapshot(folder)
    with pytest.raises(ConfigError, match="unfinished training"):
        chapter_run(folder, {}, False)
    assert snapshot(folder) == before


def test_fresh_removes_what_the_old_model_produced_and_only_that(d):
    folder, config = d
    own = {"samples.json": "{}", "budgets.json": "{}", "loss_curves.png": "png",
           "hf/config.json": '{"tinylm_version": "0"}', "hf/model.safetensors": "w"}
    for name, text in {**own, "notes.txt": "mine", "exports/config.json": "{}"}.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_text(text)
    old_final = (folder / "checkpoints" / "final.pt").read_bytes()
    cfg = load_preset("quick", **{**config, "learning_rate": 1e-3})
    Run(folder, cfg, progress=False, resume=False).train()
    assert not any((folder / name).exists() for name in own) and not (folder / "hf").exists()
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "exports" / "config.json").exists()
    assert (folder / "checkpoints" / "final.pt").read_bytes() != old_final


def test_a_book_run_continued_in_a_copy_leaves_the_shorter_models_export_behind(tmp_path):
    from tinylm.pipeline import _start_from_earlier_run

    cfg = load_preset("quick")
    earlier = tmp_path / "book" / "quick-earlier"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "checkpoints" / "last.pt").write_bytes(b"the shorter model")
    cfg.save(earlier / "config.json")
    (earlier / "hf").mkdir()
    (earlier / "hf" / "config.json").write_text('{"tinylm_version": "0"}')
    (earlier / "pipeline.json").write_text("{}")
    longer = tmp_path / "book" / "quick-longer"
    _start_from_earlier_run(cfg.replace(epochs=6), longer)
    assert (longer / "checkpoints" / "last.pt").read_bytes() == b"the shorter model"
    assert not (longer / "hf").exists() and not (longer / "pipeline.json").exists()
