"""The CUDA path on a real GPU: training in bf16, the fused attention kernel against the
CPU's, the cache, a GPU checkpoint served on a CPU, and data-parallel training with nccl.
Skipped where torch sees no GPU (the CPU-side dispatch is in tests/unit/test_cuda_dispatch.py);
benchmarks/gpu/gpu.sh runs this file on the GPU machine before its timings."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tinylm.checkpoint import load_model
from tinylm.config import load_preset
from tinylm.generate import generate_ids
from tinylm.model import GPT, GPTConfig, KVCache
from tinylm.stages import Run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")

CFG = GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=64, dropout=0.0)
TINY = dict(bytes_per_language=30_000, vocab_size=512, n_layer=2, n_embd=64, n_head=2,
            block_size=64, batch_size=16, warmup_steps=5, threads=1, sample_new_tokens=8,
            budget_new_tokens=8)


def _texts(folder):
    """A small two-language corpus of repeated sentences, which a model learns in an epoch."""
    folder.mkdir()
    words = {"en": "the lord spoke unto moses and said", "es": "y habló jehová a moisés diciendo"}
    for lang, line in words.items():
        for book in range(3):
            paragraphs = (f"{line} {i % 7} {line}." for i in range(400))
            (folder / f"book{book}.{lang}.txt").write_text("\n\n".join(paragraphs) + "\n")
    return folder


def test_the_gpu_forward_pass_agrees_with_the_cpu():
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    x = torch.randint(0, CFG.vocab_size, (4, CFG.block_size))
    with torch.no_grad():
        cpu = model(x)[0]
        gpu = model.cuda()(x.cuda())[0].cpu()  # fp32, fused attention
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = model(x.cuda())[0].float().cpu()  # flash attention in bf16
    assert (gpu - cpu).abs().max() < 1e-3
    assert (bf16.softmax(-1) - cpu.softmax(-1)).abs().max() < 0.02


def test_the_cache_on_the_gpu_equals_the_full_forward_pass():
    torch.manual_seed(0)
    model = GPT(CFG).cuda().eval()
    x = torch.randint(0, CFG.vocab_size, (3, 20), device="cuda")
    with torch.no_grad():
        full = model(x)[0]
        cache = KVCache(CFG, 3, device="cuda")
        parts = [model(x[:, a:b], cache=cache)[0] for a, b in ((0, 7), (7, 8), (8, 20))]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-4)
    new = generate_ids(model, list(range(1, 11)), 40, temperature=0.0)
    assert len(new) == 40  # past block_size: the cache keeps its newer half on the GPU


def test_training_on_the_gpu_learns_in_bf16_and_its_checkpoint_serves_on_a_cpu(tmp_path):
    cfg = load_preset("quick", corpus_path=str(_texts(tmp_path / "texts")), device="cuda",
                      epochs=2, **TINY)
    run = Run(tmp_path / "run", cfg, progress=False, resume=False)
    run.train()
    metrics = json.loads((run.dir / "training_metrics.json").read_text())
    assert metrics["environment"]["device"].startswith("cuda")
    assert metrics["environment"]["dtype"] == ("bfloat16" if torch.cuda.is_bf16_supported() else "float32")
    losses = [h["train_loss"] for h in metrics["history"]]
    assert len(losses) == 2 and losses[1] < losses[0]
    model, _ = load_model(run.dir / "checkpoints" / "final.pt", device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    x = torch.randint(0, model.config.vocab_size, (1, 16))
    with torch.no_grad():
        cpu = model(x)[0]
        gpu = model.cuda()(x.cuda())[0].cpu()
    assert (gpu - cpu).abs().max() < 1e-3


def test_two_processes_on_one_gpu_train_with_nccl_or_say_why_not(tmp_path):
    """nccl wants one GPU per process: with two GPUs the run trains, with one tinylm refuses
    before starting any process (instead of one failing and the other waiting)."""
    cfg = dict(TINY, epochs=1)
    flags = [x for k, v in cfg.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    out = subprocess.run([sys.executable, "-m", "tinylm.cli", "train", "--preset", "quick", *flags,
                          "--corpus-path", str(_texts(tmp_path / "texts")), "--device", "cuda",
                          "--nproc", "2", "--output-dir", str(tmp_path / "run"), "--quiet"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    if torch.cuda.device_count() >= 2:
        assert out.returncode == 0, out.stderr[-3000:]
        metrics = json.loads((tmp_path / "run" / "training_metrics.json").read_text())
        assert metrics["world_size"] == 2
    else:
        assert out.returncode == 1 and "need 2 GPUs" in out.stderr, out.stderr[-3000:]
