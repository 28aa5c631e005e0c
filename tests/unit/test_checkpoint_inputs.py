"""Hostile checkpoints: whatever the bytes of a checkpoint and whatever its checksum file
says, loading it ends in ``CheckpointError`` (exit 4) or a model, never another exception
or a hang; and ``tinylm generate`` on such a run exits 4 without a traceback.

Most examples have a matching checksum, because the checksum only guards against damage:
a file written by anyone with the run's folder passes it.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinylm import cli
from tinylm.checkpoint import digest_path, load_model, load_resume_state, save_checkpoint
from tinylm.config import Config
from tinylm.errors import CheckpointError
from tinylm.model import GPT, GPTConfig

from checkpoints import TINY_MODEL, training_state

FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def good() -> bytes:
    buf = io.BytesIO()
    torch.save({"format": 1, "tinylm_version": "0", **training_state(3)}, buf)
    return buf.getvalue()


def place(folder: Path, data: bytes, name: str = "last.pt", checksum: bool = True) -> Path:
    """``data`` as checkpoint ``name`` with a checksum that matches it (or one that does not)."""
    path = folder / name
    path.write_bytes(data)
    digest = hashlib.sha256(data if checksum else data + b"x").hexdigest()
    digest_path(path).write_text(digest + "\n")
    return path


def refused(path: Path) -> CheckpointError:
    """Both loaders refuse ``path`` with CheckpointError, exit code 4, naming the file."""
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert err.value.exit_code == 4 and str(path) in err.value.message and err.value.remedy
    with pytest.raises(CheckpointError) as err2:
        load_resume_state(path.parent, quiet=True)
    assert err2.value.exit_code == 4
    return err.value


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


json_like = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                         lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@FUZZ
@given(data=st.data())
def test_any_bytes_with_a_matching_checksum_are_refused_cleanly(good, tmp_path_factory, data):
    kind = data.draw(st.sampled_from(["truncated", "random", "pickle", "zip", "torch object"]))
    if kind == "truncated":
        blob = good[:data.draw(st.integers(0, len(good) - 1))]
    elif kind == "random":
        blob = data.draw(st.binary(max_size=4096))
    elif kind == "pickle":  # plain pickles of data, not a checkpoint
        blob = pickle.dumps(data.draw(json_like), protocol=data.draw(st.integers(0, 5)))
    elif kind == "zip":  # a valid zip archive with the wrong contents
        blob = _zip_bytes(data.draw(st.dictionaries(
            st.sampled_from(["archive/data.pkl", "archive/version", "archive/data/0", "x", "data.pkl"]),
            st.binary(max_size=64), max_size=4)))
    else:  # a real torch file whose content is not a training state
        blob = _torch_bytes(data.draw(json_like))
    folder = tmp_path_factory.mktemp("fuzz")
    refused(place(folder, blob, data.draw(st.sampled_from(["last.pt", "best.pt"]))))


def test_a_checksum_mismatch_is_refused(good, tmp_path):
    err = refused(place(tmp_path, good, checksum=False))
    assert "corrupt or truncated" in err.message


_BROKEN_CONFIGS = [
    None, [], "gpt", {}, {**TINY_MODEL.to_dict(), "n_embd": "16"},
    {**TINY_MODEL.to_dict(), "n_layer": 1.5}, {**TINY_MODEL.to_dict(), "n_layer": True},
    {**TINY_MODEL.to_dict(), "vocab_size": 10**12},  # would allocate terabytes
    {**TINY_MODEL.to_dict(), "n_head": 3},  # 16 is not divisible by 3
    {**TINY_MODEL.to_dict(), "dropout": float("nan")}, {**TINY_MODEL.to_dict(), "gate": True},
    {**TINY_MODEL.to_dict(), "norm": "batchnorm"}, {**TINY_MODEL.to_dict(), "qk_norm": 1},
    {**TINY_MODEL.to_dict(), "bias": "yes"}, {**TINY_MODEL.to_dict(), "positions": None},
    {k: v for k, v in TINY_MODEL.to_dict().items() if k != "block_size"},
]


@pytest.mark.parametrize("model_config", _BROKEN_CONFIGS, ids=range(len(_BROKEN_CONFIGS)))
def test_a_malformed_model_config_is_a_checkpoint_error(tmp_path, model_config):
    save_checkpoint(tmp_path / "last.pt", {**training_state(), "model_config": model_config})
    assert "malformed model_config" in refused(tmp_path / "last.pt").message


def test_a_checkpoint_saved_before_the_architecture_settings_loads_as_gpt2(tmp_path):
    state = training_state()
    saved = {k: v for k, v in TINY_MODEL.to_dict().items()
             if k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout")}
    save_checkpoint(tmp_path / "final.pt", {**state, "model_config": saved})
    model, _ = load_model(tmp_path / "final.pt")
    assert model.config == TINY_MODEL and model.config.is_gpt2


def test_a_checkpoint_of_another_architecture_loads_as_it(tmp_path):
    config = GPTConfig(**TINY_MODEL.to_dict() | {"norm": "rmsnorm", "positions": "rotary",
                                                 "mlp": "swiglu", "qk_norm": True, "bias": False})
    model = GPT(config)
    save_checkpoint(tmp_path / "final.pt", {**training_state(), "model": model.state_dict(),
                                            "model_config": config.to_dict()})
    loaded, _ = load_model(tmp_path / "final.pt")
    assert loaded.config == config
    x = torch.randint(0, config.vocab_size, (1, 8))
    assert torch.equal(loaded(x)[0], model.eval()(x)[0])


@pytest.mark.parametrize("change", ["other shape", "missing weight", "not tensors"])
def test_weights_that_do_not_fit_the_model_config_are_a_checkpoint_error(tmp_path, change):
    state = training_state()
    if change == "other shape":
        state["model_config"] = {**TINY_MODEL.to_dict(), "n_embd": 32}
    elif change == "missing weight":
        state["model"].pop(next(iter(state["model"])))
    else:
        state["model"] = ["weights"]
    save_checkpoint(tmp_path / "final.pt", state)
    with pytest.raises(CheckpointError, match="does not hold the weights of the model") as err:
        load_model(tmp_path / "final.pt")
    assert err.value.exit_code == 4


@pytest.mark.parametrize("key, value", [("step", None), ("config", "{not json"), ("config", "[1]"),
                                        ("optimizer", "adam"), ("history", 3), ("sampler", None)])
def test_a_training_state_missing_a_part_falls_back_or_is_refused(tmp_path, capsys, key, value):
    broken = {**training_state(9), key: value}
    save_checkpoint(tmp_path / "last.pt", broken)
    with pytest.raises(CheckpointError, match=f"not a whole training state .*{key}"):
        load_resume_state(tmp_path)
    save_checkpoint(tmp_path / "best.pt", training_state(5))
    state, used = load_resume_state(tmp_path)  # a damaged last.pt falls back to best.pt
    assert (state["step"], used.name) == (5, "best.pt")
    assert "not a whole training state" in capsys.readouterr().err


@pytest.mark.parametrize("blob", ["random", "pickle", "malformed model_config"])
def test_generate_on_a_hostile_checkpoint_exits_4_without_a_traceback(tmp_path, capsys, blob):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    Config().save(run / "config.json")
    if blob == "random":
        place(run / "checkpoints", bytes(range(256)) * 8, "final.pt")
    elif blob == "pickle":
        place(run / "checkpoints", pickle.dumps({"format": 1, "model": [1, 2]}), "final.pt")
    else:
        save_checkpoint(run / "checkpoints" / "final.pt",
                        {**training_state(), "model_config": {"vocab_size": "many"}})
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert cli.main(["generate", "--output-dir", str(run), "--prompt", "x"]) == 4
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: checkpoint" in err and "what to do: " in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("fmt", ["1", None, [1], True])
def test_a_format_that_is_not_a_number_is_not_a_tinylm_checkpoint(tmp_path, fmt):
    err = refused(place(tmp_path, _torch_bytes({**training_state(), "format": fmt})))
    assert "is not a tinylm checkpoint" in err.message
