"""The settings are described once, on Config's fields; everything else is derived from them."""
import dataclasses
import re

import numpy as np
import pytest

from tinylm.cli import main
from tinylm.config import (CORPUS_KEYS, EXAMPLES_DIR, MAX_VOCAB, NOT_TRAINING, PRESETS, RANGES,
                           RESUMABLE_CHANGES, Config, check_resume, load_preset)
from tinylm.errors import ConfigError, TokenizerError, TrainingError
from tinylm.model import GPT2_ARCHITECTURE, GPTConfig
from tinylm.tokenizer import train_tokenizer

# The spec: which settings may change on resume, which leave training alone, which make the
# corpus, and which have no numeric range. Changing these changes fingerprints and resume rules.
RESUMABLE = {"name", "epochs", "checkpoint_every", "threads", "nproc", "compile", "device",
             "sample_new_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
             "max_repeated_4grams", "budget_rss_mb", "budget_p95_ms", "budget_prompt_tokens",
             "budget_new_tokens", "max_download_mb"}
NOT_TRAINING_SPEC = RESUMABLE - {"epochs"}  # epochs changes the model, yet a run may train longer
CORPUS = {"languages", "bytes_per_language", "val_fraction", "corpus_path", "corpus_language",
          "corpus_url", "corpus_sha256", "seed"}
NO_RANGE = {"name", "languages", "corpus_path", "corpus_language", "corpus_url", "corpus_sha256",
            "dtype", "device", "compile", "optimizer", "lr_decay", "norm", "positions", "mlp",
            "qk_norm", "bias"}
MODEL = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "norm",
         "positions", "mlp", "qk_norm", "bias")
FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def test_every_setting_is_described_on_its_field():
    for name, f in FIELDS.items():
        facts = f.metadata
        assert facts["why"] and "%" not in facts["why"], name  # argparse formats help with %
        assert facts["stage"] in ("corpus", "tokenizer", "train", "samples", "budgets", None), name
        assert isinstance(facts["resumable"], bool), name
        if facts["range"]:
            lo, hi = facts["range"]
            assert lo <= getattr(Config(), name) <= hi, name
        if facts["choices"]:
            assert getattr(Config(), name) in facts["choices"], name


def test_every_setting_says_when_to_change_it_which_way_and_what_it_costs():
    """The tuning guide (the book's hyperparameter table) is rendered from the fields, so a new
    setting cannot be left out of it."""
    for name, f in FIELDS.items():
        tune = f.metadata["tune"]
        assert set(tune) == {"when", "way", "cost"}, name
        assert all(isinstance(text, str) and text.strip() for text in tune.values()), name


def test_derived_tables_are_the_spec():
    assert set(RESUMABLE_CHANGES) == RESUMABLE
    assert set(NOT_TRAINING) == NOT_TRAINING_SPEC
    assert set(CORPUS_KEYS) == CORPUS
    assert set(FIELDS) - set(RANGES) == NO_RANGE
    assert all(RANGES[k][2] == FIELDS[k].metadata["why"] for k in RANGES)


def _other(value):
    """A value of the same type that differs from ``value``."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, list):
        return [*value, "fr"]
    if isinstance(value, str):
        return value + "x"
    return value + 1


@pytest.mark.parametrize("key", sorted(FIELDS))
def test_resume_accepts_exactly_the_resumable_changes(key):
    new = dataclasses.replace(Config(), **{key: _other(getattr(Config(), key))})
    if key in RESUMABLE:
        assert set(check_resume(Config(), new)) == {key}
    else:
        with pytest.raises(TrainingError, match=key):
            check_resume(Config(), new)


def test_one_vocabulary_limit_for_the_config_and_the_tokenizer(tmp_path):
    assert MAX_VOCAB == np.iinfo(np.uint16).max  # the dtype of tokens/*.bin
    assert RANGES["vocab_size"][1] == MAX_VOCAB
    Config(vocab_size=MAX_VOCAB).validate()
    with pytest.raises(ConfigError, match="vocab_size"):
        Config(vocab_size=MAX_VOCAB + 1).validate()
    with pytest.raises(TokenizerError, match=f"{MAX_VOCAB:,}"):
        train_tokenizer(tmp_path, MAX_VOCAB + 1, ["en", "es"], tmp_path, progress=False)


def test_defaults_are_the_default_preset():
    assert Config().to_dict() == load_preset("default").to_dict()


def test_other_presets_set_every_model_setting():
    # a preset that left one out would silently follow a change of the default run
    for name in set(PRESETS) - {"default"}:
        text = (EXAMPLES_DIR / f"{name}.toml").read_text()
        for key in MODEL:
            assert re.search(rf"^{key} = ", text, re.M), (name, key)


def test_train_help_shows_the_default_runs_values(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    default = load_preset("default")
    assert f"--n-layer V default {default.n_layer}; range 1..48: transformer blocks" in text
    assert f"--dropout V default {default.dropout}; range 0.0..0.9: dropout" in text
    assert "--dtype V default 'auto'; one of auto, bf16, fp32:" in text


def test_model_config_comes_from_the_run_config_in_the_checkpoint_format():
    cfg = load_preset("quick", n_layer=5, dropout=0.1)
    assert GPTConfig.from_config(cfg).to_dict() == {k: getattr(cfg, k) for k in MODEL}
    # a checkpoint written before the architecture was a setting still loads, as GPT-2
    old = {"vocab_size": 4096, "block_size": 128, "n_layer": 4, "n_head": 4, "n_embd": 128,
           "dropout": 0.0}
    assert GPTConfig(**old).to_dict() == old | GPT2_ARCHITECTURE
    for f in dataclasses.fields(GPTConfig):  # each model setting is a Config setting of one type
        assert FIELDS[f.name].type == f.type


# A digest that walks out of the download cache: "./" repeated, then "../victim.txt", 64 long.
TRAVERSAL = "./" * 25 + "/../victim.txt"


@pytest.mark.parametrize("sha", [TRAVERSAL, "g" * 64, "0" * 63 + " ", "0" * 65, "a" * 63])
def test_corpus_sha256_is_exactly_64_hex_characters_from_every_source(tmp_path, sha):
    assert len(TRAVERSAL) == 64
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    url = "http://127.0.0.1:9/book.en.txt"
    toml = tmp_path / "mine.toml"
    toml.write_text(f'corpus_url = "{url}"\ncorpus_sha256 = "{sha}"\nlanguages = ["en"]\n')
    sources = {"config": lambda: Config(corpus_url=url, corpus_sha256=sha).validate(),
               "preset TOML": lambda: load_preset(str(toml)),
               "notebook config": lambda: load_preset("quick", corpus_url=url, corpus_sha256=sha)}
    for source, make in sources.items():
        with pytest.raises(ConfigError, match="corpus_sha256") as err:
            make()
        assert err.value.exit_code == 1 and "sha256sum" in err.value.remedy, source
    run = tmp_path / "run"
    assert main(["train", "--preset", "quick", "--corpus-url", url, "--corpus-sha256", sha,
                 "--languages", "en", "--output-dir", str(run), "--quiet"]) == 1
    assert victim.read_text() == "keep me" and not run.exists()
    Config(corpus_url=url, corpus_sha256="AB" * 32).validate()  # either case of hex digits


@pytest.mark.parametrize("name", ["../../outside", "a/b", ".hidden", "", "x" * 65, "tab\tname"])
def test_a_run_name_is_one_plain_folder_name(tmp_path, name):
    with pytest.raises(ConfigError, match="name=") as err:
        load_preset("quick", name=name)
    assert err.value.exit_code == 1
    toml = tmp_path / "mine.toml"
    toml.write_text(f"name = {name!r}\n".replace("'", '"').replace("\t", "\\t"))
    with pytest.raises(ConfigError, match="name="):
        load_preset(str(toml))
    for ok in ("quick", "my_run-2.0", "x" * 64):
        assert load_preset("quick", name=ok).name == ok
