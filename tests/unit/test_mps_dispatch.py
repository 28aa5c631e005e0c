"""The MPS path (Apple GPUs), checked on a machine without one: MPS's availability is mocked,
and what tinylm chooses there (device, precision, attention kernel) is asserted. No run on MPS
has been measured, so "auto" never picks it, and only an asked-for MPS is used."""
import pytest
import torch

from tinylm import cli, distributed, stages
from tinylm.budget import measure_inference
from tinylm.config import load_preset
from tinylm.errors import ConfigError
from tinylm.model import attention_kernel
from tinylm.runtime import resolve_device, resolve_dtype
from tinylm.stages import Run

MPS = torch.device("mps")
BF16, FP32 = torch.bfloat16, torch.float32


def _mps(monkeypatch, available: bool = True, macos: tuple[int, int] = (14, 0)) -> None:
    """A Mac as torch would see it: MPS there or not, and the macOS version it runs."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: available)
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer",
                        lambda major, minor: macos >= (major, minor))


def test_mps_is_used_when_asked_and_auto_stays_on_the_cpu(monkeypatch):
    _mps(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("mps") == MPS
    assert resolve_device("auto").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("built, why", [(False, "built without MPS"), (True, "macOS 12.3")])
def test_a_missing_mps_is_refused_saying_why(monkeypatch, built, why):
    _mps(monkeypatch, available=False)
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: built)
    with pytest.raises(ConfigError) as err:
        resolve_device("mps")
    assert "MPS" in err.value.message and why in err.value.message
    assert "--device cpu" in err.value.remedy and err.value.exit_code == 1


@pytest.mark.parametrize("asked, macos, expected", [
    ("auto", (14, 0), FP32),  # not measured: auto stays in fp32 even where bf16 runs
    ("auto", (13, 5), FP32),
    ("fp32", (14, 0), FP32),
    ("bf16", (14, 0), BF16),
    ("bf16", (15, 1), BF16),
])
def test_precision_on_mps_is_fp32_unless_bf16_is_asked_and_supported(monkeypatch, asked, macos,
                                                                     expected):
    _mps(monkeypatch, macos=macos)
    assert resolve_dtype(asked, MPS) == expected


def test_bf16_asked_on_an_mps_without_it_is_refused(monkeypatch):
    _mps(monkeypatch, macos=(13, 5))
    with pytest.raises(ConfigError, match="macOS 14") as err:
        resolve_dtype("bf16", MPS)
    assert "--dtype fp32" in err.value.remedy


@pytest.mark.parametrize("dtype", [FP32, BF16])
def test_attention_on_mps_is_the_fused_kernel_in_the_compute_precision(dtype):
    assert attention_kernel("mps", dtype) == "fused"  # scaled_dot_product_attention
    assert attention_kernel("mps", dtype, cached=True) == "fused_fp32"  # the cache holds fp32
    assert attention_kernel("mps", dtype, keep_probs=True) == "by_hand"  # attention maps


def test_train_on_a_missing_mps_is_refused_before_anything_is_written(monkeypatch, tmp_path, capsys):
    _mps(monkeypatch, available=False)
    run_dir = tmp_path / "run"
    assert cli.main(["train", "--preset", "quick", "--device", "mps", "--output-dir",
                     str(run_dir), "--fresh", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "Metal GPU (MPS) is not available" in err and "--device cpu" in err
    assert not [p.name for p in run_dir.glob("*") if p.name != ".lock"]  # no stage was built


def test_a_budget_on_a_missing_mps_is_refused_before_starting_the_measurement(monkeypatch, tmp_path):
    _mps(monkeypatch, available=False)
    monkeypatch.setattr("subprocess.run", lambda *a, **kw: pytest.fail("a child was started"))
    with pytest.raises(ConfigError, match="MPS"):
        measure_inference(tmp_path / "final.pt", device="mps")


def test_several_processes_on_mps_are_refused_before_any_starts(monkeypatch):
    _mps(monkeypatch)
    distributed.require_gpus("mps", 1)
    with pytest.raises(ConfigError, match="2 processes on MPS") as err:
        distributed.require_gpus("mps", 2)
    assert "--nproc 1" in err.value.remedy and "--device cpu" in err.value.remedy
    assert load_preset("quick", device="mps").device == "mps"


def test_a_resumed_run_reads_its_checkpoint_onto_the_cpu_whatever_its_device(monkeypatch, tmp_path):
    """A generator's state must be a CPU tensor (torch.set_rng_state refuses any other), so
    a checkpoint read onto the run's GPU could not be resumed; the trainer copies the weights
    to its device itself. The run's device is stood in for by a GPU that stages sees."""
    cfg = load_preset("quick", bytes_per_language=20_000, vocab_size=300, n_layer=1, n_embd=16,
                      n_head=2, block_size=16, batch_size=8, epochs=1, warmup_steps=5, threads=1)
    Run(tmp_path / "run", cfg, progress=False).train()
    read_onto, load = [], stages.load_resume_state

    def spy(ckpt_dir, map_location="cpu", **kw):
        read_onto.append(torch.device(map_location).type)
        return load(ckpt_dir, "cpu", **kw)

    monkeypatch.setattr(stages, "load_resume_state", spy)
    _mps(monkeypatch)
    monkeypatch.setattr(stages, "resolve_device", lambda name: MPS, raising=False)
    metrics = Run(tmp_path / "run", cfg.replace(epochs=2), progress=False, resume=True).train()
    assert len(metrics["history"]) == 2 and metrics["resumed"][0]["changed"] == {"epochs": [1, 2]}
    assert read_onto and set(read_onto) == {"cpu"}
