"""Every command's settings: flags derived from ``Config`` fields, one rule for the run
folder, and the defaults of the library's functions taken from the same fields."""
from __future__ import annotations

import inspect

import pytest
import torch

from tinylm import budget, cli, estimate, generate
from tinylm.config import EVALUATION, SAMPLING, Config, describe, load_preset


def flags(command: str) -> dict[str, str]:
    """--flag -> help text of a command's options."""
    parser = cli._parser().commands[command]
    return {o: a.help for a in parser._actions for o in a.option_strings}


def test_generate_takes_the_sampling_settings_by_their_names():
    got = flags("generate")
    for name in SAMPLING:
        assert got[f"--{name.replace('_', '-')}"] == describe(name)
    assert "--max-new-tokens" not in got


def test_evaluate_takes_the_settings_of_samples_and_budgets():
    got = flags("evaluate")
    assert set(EVALUATION) >= {"temperature", "max_repeated_4grams", "budget_p95_ms"}
    for name in EVALUATION:
        assert got[f"--{name.replace('_', '-')}"] == describe(name)
    assert "--epochs" not in got and "--seed" not in got  # they would change the trained model


def test_check_takes_every_setting_flag_as_train_does():
    train, check = flags("train"), flags("check")
    for f in Config.__dataclass_fields__:
        assert check[f"--{f.replace('_', '-')}"] == train[f"--{f.replace('_', '-')}"]


def test_the_estimate_of_check_answers_for_the_flags(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        rc = cli.main(["check", "--preset", "quick", "--epochs", "1", "--bytes-per-language",
                       "20000", "--threads", "1", "--output-dir", str(tmp_path / "run")])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert rc == 0, out
    train_tokens = estimate.count_tokens(load_preset("quick", bytes_per_language=20_000))[0]
    assert f"tokens/s measured, 1 epochs of ~{train_tokens:,} tokens)" in out
    assert "[ok] " + str(tmp_path / "run") + " writable" in out


def test_check_refuses_a_bad_setting_before_measuring(capsys):
    assert cli.main(["check", "--epochs", "0"]) == 1
    err = capsys.readouterr().err
    assert "epochs=0.0 is out of range [0.01, 1000]" in err and "measured" not in err


@pytest.mark.parametrize("command", ["generate", "evaluate", "export", "plot", "check", "train"])
@pytest.mark.parametrize("preset", [None, "quick"])
def test_every_command_finds_the_run_folder_by_one_rule(command, preset):
    argv = [command, *(["exports/x"] if command == "export" else []),
            *(["--preset", preset] if preset else [])]
    args = cli._parser().parse_args(argv)
    cfg = cli.config_from_args(args) if command in ("train", "check") else None
    assert cli._run_dir(args, cfg).as_posix() == f"runs/{preset or 'default'}"
    args = cli._parser().parse_args([*argv, "--output-dir", "elsewhere"])
    assert cli._run_dir(args, cfg).as_posix() == "elsewhere"


@pytest.mark.parametrize("command", ["generate", "evaluate", "plot"])
def test_a_command_reading_a_run_looks_where_train_wrote_it(command, tmp_path, monkeypatch,
                                                            capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main([command, "--preset", "quick"]) != 0
    assert "runs/quick " in capsys.readouterr().err  # the folder `train --preset quick` writes


def test_the_library_defaults_are_the_settings_defaults():
    cfg = Config()
    names = {"max_new_tokens": "sample_new_tokens"}
    for fn in (generate.generate, generate.generate_ids):
        params = inspect.signature(fn).parameters
        for name in ("max_new_tokens", "temperature", "top_k", "top_p", "min_p",
                     "repetition_penalty", "seed"):
            assert params[name].default == getattr(cfg, names.get(name, name)), (fn, name)
    params = inspect.signature(budget.measure_inference).parameters
    assert params["prompt_tokens"].default == cfg.budget_prompt_tokens
    assert params["new_tokens"].default == cfg.budget_new_tokens
