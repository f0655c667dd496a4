"""Device and numeric precision: pick what the hardware does natively and fast."""
from __future__ import annotations

import ctypes
import os
import platform
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import CnnlabError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`local_rank`: which of this machine's GPUs a distributed process uses."""
    if name == "cuda" and not torch.cuda.is_available():
        raise CnnlabError("--device cuda: no CUDA GPU is available here (use --device cpu or auto)")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


# oneDNN instruction sets without bf16 arithmetic: ONEDNN_MAX_CPU_ISA set to one of these keeps oneDNN's
# convolutions off AVX-512 BF16 and AMX, so bf16 is emulated there even on a CPU that has them
ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX, and oneDNN allowed to use them: without, bf16 convolutions on the CPU are emulated
    and far slower. (`ONEDNN_MAX_CPU_ISA=AVX2` also makes a bf16 machine behave as one without, e.g. to
    check what a CPU without native bf16 gets.)"""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in ISAS_WITHOUT_BF16:
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def cpu_name() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return name  # fp16 on a CPU runs (emulated, slowly): useful to study finite precision, not for speed


def autocast(device: torch.device, precision: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def usable_cores() -> list[int]:
    """The cores this process may run on (not the machine's count in a container)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def use_all_cores(processes_here: int = 1) -> int:
    """One thread per core this process may run on, shared evenly by the `processes_here` processes of a
    distributed run on this machine."""
    n = max(1, len(usable_cores()) // processes_here)
    torch.set_num_threads(n)
    return n


def core_shares(workers: int) -> list[set[int]] | None:
    """The cores this process may run on, dealt out to `workers` processes of one machine (round robin; with
    more workers than cores, some share one), so each uses its own share instead of every core: K processes
    of all-core threads on the same cores slow each other far more than K times. None where the platform
    cannot pin processes (then each worker uses every core)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = usable_cores()
    return [set(cores[i::workers]) or {cores[i % len(cores)]} for i in range(workers)]


@contextmanager
def running_on(cores: set[int] | None):
    """This process confined to `cores` for the block (its threads follow: use_all_cores), then freed again."""
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Linux (glibc) only: keep the memory of freed tensors in the process for the next step, instead of
    giving it back to the kernel. glibc maps large blocks (from 128 KiB, 32 MiB once it adapts) afresh and
    unmaps them when freed, so each step's activations and gradients page-faulted in again, zero-filled by the
    kernel. Measured on 2 cores: 7-10% of an airbench94 step (one-off), 28-44% of a DataLoader pipeline's, 25% of five
    short digits runs in one process (benchmarks/kept_memory.py). Intel's PyTorch launcher preloads jemalloc
    or tcmalloc for the same reason. The cost: freed blocks stay resident, with gaps between them, so the
    process's peak memory grew by 34% in those five runs (4.5 against 3.4 GiB) and is kept until it exits.
    Returns whether the setting took; `cnnlab train --no-keep-freed-memory` leaves glibc as it is."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # the C library this process already uses
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """channels_last for every 4-d weight (conv filters): the layout fast CPU and GPU convolutions want.
    Unlike `model.to(memory_format=...)`, it leaves 5-d group-conv weights alone instead of failing."""
    for p in model.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return model
