"""The pure parts of training: LR schedule, data order, checkpoints, config validation."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from tinylm.checkpoint import load_checkpoint, save_checkpoint
from tinylm.config import RANGES, Config, load_preset
from tinylm.data import EpochSampler, TokenDataset, language_of_positions, total_steps
from tinylm.errors import CheckpointError, ConfigError
from tinylm.files import atomic_write_text
from tinylm.train import lr_at


def test_lr_schedule_values():
    peak, warm, total, floor = 1e-3, 10, 110, 0.1
    assert lr_at(0, total, peak, warm, floor) == pytest.approx(1e-4)
    assert lr_at(4, total, peak, warm, floor) == pytest.approx(5e-4)
    assert lr_at(10, total, peak, warm, floor) == pytest.approx(peak)
    assert lr_at(60, total, peak, warm, floor) == pytest.approx(peak * (0.1 + 0.9 * 0.5))  # half way
    assert lr_at(110, total, peak, warm, floor) == pytest.approx(peak * floor)
    assert lr_at(500, total, peak, warm, floor) == pytest.approx(peak * floor)
    after = [lr_at(s, total, peak, warm, floor) for s in range(warm, total)]
    assert all(b <= a for a, b in zip(after, after[1:]))  # cosine never goes up


def test_the_linear_decay_falls_in_equal_steps_to_its_floor():
    peak, warm, total = 1e-3, 10, 110
    after = [lr_at(s, total, peak, warm, 0.0, "linear") for s in range(warm, total + 1)]
    assert after[0] == pytest.approx(peak) and after[50] == pytest.approx(peak / 2)
    assert after[-1] == 0.0
    assert np.diff(after) == pytest.approx(np.full(100, -peak / 100))
    # a cosine spends fewer steps near the peak: below the line in the first half
    assert lr_at(30, total, peak, warm, 0.0) > lr_at(30, total, peak, warm, 0.0, "linear")


def test_windows_and_targets():
    ds = TokenDataset(np.arange(101, dtype=np.uint16), block_size=10)
    assert len(ds) == 10
    x, y = ds.batch(np.array([0, 9]))
    assert x.shape == (2, 10) and torch.equal(y, x + 1)
    assert x[1, 0] == 90 and y[1, -1] == 100
    assert ds.target_positions(np.array([2]))[0, 0] == 21


def test_epoch_visits_every_window_once_and_resumes_mid_epoch():
    s = EpochSampler(n_windows=23, batch_size=5, seed=3)
    first = list(s.epoch_batches())
    assert sorted(np.concatenate(first).tolist()) == list(range(23)) and len(first) == 5
    s.next_epoch()
    second = np.concatenate(list(s.epoch_batches()))
    assert not np.array_equal(np.concatenate(first), second)  # reshuffled each epoch
    # stop after two batches, restore into a fresh sampler, continue: same batches
    a = EpochSampler(23, 5, seed=3)
    it = a.epoch_batches()
    head = [next(it), next(it)]
    b = EpochSampler(23, 5, seed=3)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    tail = list(b.epoch_batches())
    assert [x.tolist() for x in head + tail] == [x.tolist() for x in first]


def test_an_epoch_cut_short_continues_from_where_it_stopped():
    """A run of 1.5 epochs takes the first batches of the second epoch's order; a resumed
    longer run takes the rest of that same order."""
    whole = EpochSampler(23, 5, seed=3)
    first = list(whole.epoch_batches(until=2))
    assert whole.state_dict() == {"epoch": 0, "batch": 2}
    resumed = EpochSampler(23, 5, seed=3)
    resumed.load_state_dict(whole.state_dict())
    rest = list(resumed.epoch_batches(until=99))  # past the end: the epoch's last batch
    assert [x.tolist() for x in first + rest] == [x.tolist() for x in EpochSampler(23, 5, 3).epoch_batches()]
    assert total_steps(1.5, 5) == 8 and total_steps(2, 5) == 10 and total_steps(0.01, 5) == 1


def test_language_of_positions():
    spans = [[0, 10, "en"], [10, 25, "es"]]
    lang = language_of_positions(spans, np.array([0, 9, 10, 24]), ["en", "es"])
    assert lang.tolist() == [0, 0, 1, 1]


def test_checkpoint_save_load_identity(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    state = {"model": model.state_dict(), "step": 7, "history": json.dumps([{"a": 1.5}]),
             "rng": torch.get_rng_state()}
    save_checkpoint(tmp_path / "x.pt", state)
    back = load_checkpoint(tmp_path / "x.pt")
    assert back["step"] == 7 and json.loads(back["history"]) == [{"a": 1.5}]
    for k, v in model.state_dict().items():
        assert torch.equal(back["model"][k], v)
    assert torch.equal(back["rng"], state["rng"])


def test_corrupt_or_truncated_checkpoint_is_refused(tmp_path):
    save_checkpoint(tmp_path / "x.pt", {"w": torch.ones(100)})
    data = (tmp_path / "x.pt").read_bytes()
    (tmp_path / "x.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as e:
        load_checkpoint(tmp_path / "x.pt")
    assert "best.pt" in e.value.remedy and e.value.exit_code == 4


def test_checkpoint_from_newer_version_is_refused(tmp_path):
    save_checkpoint(tmp_path / "x.pt", {"format": 99})
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "x.pt")


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "m.json"
    atomic_write_text(target, "old")
    import os

    def boom(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temp file left


@pytest.mark.parametrize("key", sorted(RANGES))
def test_config_rejects_each_out_of_range_value(key):
    lo, hi, _ = RANGES[key]
    default = getattr(Config(), key)
    for bad in (lo - (1 if isinstance(default, int) else abs(lo) * 0.5 + 1e-3), hi * 2 + 1):
        with pytest.raises(ConfigError) as e:
            Config.from_dict({key: bad}).validate()
        assert key in e.value.message and e.value.remedy and e.value.exit_code == 1


def test_config_other_validation():
    with pytest.raises(ConfigError, match="divisible"):
        Config(n_embd=100, n_head=3).validate()
    with pytest.raises(ConfigError, match="unknown configuration"):
        Config.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("fastest")
    with pytest.raises(ConfigError, match="is not a whole number"):
        load_preset("quick", batch_size="three")
    with pytest.raises(ConfigError, match="is not a number"):
        load_preset("quick", epochs="three")
    with pytest.raises(ConfigError, match="no embedded"):
        Config(languages=["xx"]).validate()


def test_presets_load_and_flags_override():
    for name in ("quick", "default", "high_quality", "low_memory"):
        cfg = load_preset(name)
        assert cfg.name == name
    cfg = load_preset("default", epochs="5", languages="en,fr")
    assert cfg.epochs == 5 and cfg.languages == ["en", "fr"]
    assert dataclasses.asdict(Config.from_dict(cfg.to_dict())) == cfg.to_dict()
