"""The CUDA path, checked on a CPU: which attention runs where, bf16 and device choice,
pinned batches, and the budget clock. The GPU itself is exercised by benchmarks/gpu/gpu.sh."""
import pytest
import torch
import torch.nn.functional as F

import tinylm.model
from tinylm.budget import device_clock, measure_inference
from tinylm.errors import ConfigError
from tinylm.model import GPT, GPTConfig, KVCache, attention_kernel
from tinylm.runtime import resolve_device, resolve_dtype, to_device

CFG = GPTConfig(vocab_size=300, block_size=24, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
BF16, FP32 = torch.bfloat16, torch.float32
CUDA = torch.device("cuda")


@pytest.mark.parametrize("device, dtype, kernel", [
    ("cpu", BF16, "fused_fp32"),  # measured fastest on a CPU, under bf16 autocast too
    ("cpu", FP32, "fused_fp32"),
    ("cuda", BF16, "fused"),  # flash attention: never a T x T matrix
    ("cuda", FP32, "fused"),
])
def test_attention_kernel_by_device_and_precision(device, dtype, kernel):
    assert attention_kernel(device, dtype) == kernel
    assert attention_kernel(device, dtype, cached=True) == "fused_fp32"  # the cache holds fp32
    assert attention_kernel(device, dtype, keep_probs=True) == "by_hand"  # attention maps


def _spy_sdpa(monkeypatch) -> list[torch.dtype]:
    """Record the dtype of every fused attention call (F is torch.nn.functional itself)."""
    seen, real = [], F.scaled_dot_product_attention

    def sdpa(q, k, v, **kwargs):
        seen.append(q.dtype)
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(tinylm.model.F, "scaled_dot_product_attention", sdpa)
    return seen


def test_the_forward_pass_asks_for_its_own_device_and_runs_that_kernel(monkeypatch):
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    x = torch.randint(0, CFG.vocab_size, (2, 20))
    asked, sdpa = [], _spy_sdpa(monkeypatch)
    real = attention_kernel
    monkeypatch.setattr(tinylm.model, "attention_kernel",
                        lambda device, dtype, **kw: asked.append((device, dtype)) or real(device, dtype, **kw))
    with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
        model(x)
    assert asked == [("cpu", BF16)] * CFG.n_layer and sdpa == [FP32] * CFG.n_layer  # fp32 on a CPU
    asked.clear()
    sdpa.clear()
    with torch.no_grad():
        model(x)
    assert asked == [("cpu", FP32)] * CFG.n_layer and sdpa == [FP32] * CFG.n_layer


def test_the_gpu_kernel_runs_in_bf16_and_agrees_with_the_cpu_ones(monkeypatch):
    """The "fused" branch is what a GPU takes; run here, it must compute the same attention."""
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    x = torch.randint(0, CFG.vocab_size, (2, 20))
    sdpa, out = _spy_sdpa(monkeypatch), {}
    for kernel in ("by_hand", "fused", "fused_fp32"):
        monkeypatch.setattr(tinylm.model, "attention_kernel", lambda *a, k=kernel, **kw: k)
        with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
            out[kernel] = model(x)[0].float()
    assert sdpa == [BF16] * CFG.n_layer + [FP32] * CFG.n_layer  # fused: in the autocast dtype
    probs = {k: v.softmax(-1) for k, v in out.items()}
    assert (probs["fused"] - probs["by_hand"]).abs().max() < 0.02
    assert (probs["fused"] - probs["fused_fp32"]).abs().max() < 0.02


def test_generation_with_a_cache_under_bf16_uses_the_fp32_kernel(monkeypatch):
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    sdpa = _spy_sdpa(monkeypatch)
    with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
        model(torch.randint(0, CFG.vocab_size, (1, 5)), cache=KVCache(CFG, 1))
    assert sdpa == [FP32] * CFG.n_layer


@pytest.mark.parametrize("supported, expected", [(True, BF16), (False, FP32)])
def test_auto_precision_on_cuda_is_bf16_where_the_gpu_has_it(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **kw: supported)
    assert resolve_dtype("auto", CUDA) == expected
    assert resolve_dtype("fp32", CUDA) == FP32 and resolve_dtype("bf16", CUDA) == BF16


def test_device_cuda_without_a_gpu_is_refused_and_auto_takes_a_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda")
    assert "no CUDA GPU" in err.value.message and "--device cpu" in err.value.remedy
    assert resolve_device("auto").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


def test_batches_are_pinned_and_copied_asynchronously_only_for_cuda(monkeypatch):
    calls = []
    real_to = torch.Tensor.to

    def fake_to(self, *args, **kwargs):
        if args and isinstance(args[0], torch.device) and args[0].type == "cuda":
            calls.append(("to cuda", kwargs.get("non_blocking", False)))
            return self
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self: False)
    monkeypatch.setattr(torch.Tensor, "to", fake_to)
    x = torch.arange(6).view(2, 3)
    assert to_device(x, torch.device("cpu")) is x and calls == []
    to_device(x, CUDA)
    assert calls == ["pin", ("to cuda", True)]


def test_the_budget_clock_waits_for_the_gpu(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    device_clock(torch.device("cpu"))
    assert synced == []
    device_clock(CUDA)
    assert synced == [CUDA]


def test_a_budget_on_a_missing_gpu_is_refused_before_starting_the_measurement(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("subprocess.run", lambda *a, **kw: pytest.fail("a child was started"))
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        measure_inference(tmp_path / "final.pt", device="cuda")


def test_more_processes_than_gpus_are_refused_before_any_starts(monkeypatch):
    from tinylm import distributed

    monkeypatch.setattr(distributed, "resolve_device", lambda device: torch.device(device))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    distributed.require_gpus("cuda", 1)
    distributed.require_gpus("cpu", 4)  # gloo: any number of processes on a CPU
    with pytest.raises(ConfigError, match="2 processes on this machine need 2 GPUs") as err:
        distributed.require_gpus("cuda", 2)
    assert "--nproc 1" in err.value.remedy and "--device cpu" in err.value.remedy
