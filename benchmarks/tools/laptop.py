"""The laptop class on a bigger CPU: PyTorch's kernels kept to AVX2, training in fp32.

Most laptops have AVX2 and no bf16 units (no AVX-512, no AMX). These variables, set before
torch is imported, keep ATen, MKL and oneDNN to AVX2 on a machine that has more, so a
benchmark's child processes run as on such a laptop; ``--dtype fp32`` does the rest (auto
would pick bf16 where the hardware has it). ``check`` measures whether it worked here.

    python benchmarks/tools/laptop.py     # the CPU capability and fp32 matmul rate, without and with
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
       "ONEDNN_MAX_CPU_ISA": "AVX2"}

_PROBE = """
import json, time, torch
a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
for _ in range(3):
    a @ b
best = float("inf")
for _ in range(5):
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    best = min(best, (time.perf_counter() - t0) / 10)
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                  "fp32_matmul_gflops": round(2 * 1024 ** 3 / best / 1e9, 1)}))
"""


def env(laptop: bool) -> dict[str, str]:
    """The environment of a child process: this one's, kept to AVX2 when ``laptop``."""
    return {**os.environ, **ENV} if laptop else dict(os.environ)


def check() -> dict:
    """The CPU capability PyTorch uses and its 1,024 x 1,024 fp32 matmul rate, without and with
    the laptop variables, each in a fresh process."""
    out = {}
    for name, laptop in (("native", False), ("laptop", True)):
        child = subprocess.run([sys.executable, "-c", _PROBE], env=env(laptop), check=True,
                               capture_output=True, text=True)
        out[name] = json.loads(child.stdout)
    return out


if __name__ == "__main__":
    print(json.dumps(check(), indent=2))
