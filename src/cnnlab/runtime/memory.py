"""Refuse, before allocating, what would not fit in memory: a model of absurd width, data at an absurd image
size. Otherwise the allocation fails deep inside PyTorch, or the machine swaps to a halt."""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from ..errors import CnnlabError
from ..models import create_model

# what training holds per parameter: the weight, its gradient, momentum or Adam's two moments (fp32 each)
BYTES_PER_PARAMETER = 16


def total_memory(device: torch.device | None = None) -> int:
    """The GPU's memory for a CUDA device, else the machine's; 2^62 where it cannot be told (nothing refused)."""
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return 2 ** 62


def available_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2 ** 62  # unknown: nothing is refused


def training_bytes(params: int, activations_per_image: int, batch_size: int) -> int:
    """A lower bound of what training needs: BYTES_PER_PARAMETER per parameter, and every layer's output kept
    for the backward pass plus its gradient (4 bytes each) for one batch."""
    return BYTES_PER_PARAMETER * params + 8 * batch_size * activations_per_image


def ensure_fits(nbytes: int, device: torch.device, what: str) -> None:
    free = available_memory(device)
    if nbytes > free:
        raise CnnlabError(f"{what} needs {nbytes / 2 ** 30:,.1f} GiB, more than the {free / 2 ** 30:,.1f} GiB free "
                          f"on {device.type}; choose something smaller")


def create_model_within_memory(name: str, device: torch.device, **kwargs) -> nn.Module:
    """`create_model`, after counting its parameters on the meta device (no memory) and checking that
    training them fits; a model whose tensors could not even be described (width=1e7) is refused too."""
    switches = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k not in ("num_classes", "in_channels"))
    what = f"{name}" + (f" ({switches})" if switches else "")
    try:
        with torch.device("meta"):
            params = sum(p.numel() for p in create_model(name, **kwargs).parameters())
    except (RuntimeError, OverflowError, MemoryError, TypeError) as exc:  # TypeError: a size beyond int64
        raise CnnlabError(f"{what}: its layers are too large to build ({str(exc).splitlines()[0][:100]})") from None
    ensure_fits(params * BYTES_PER_PARAMETER, device, f"{what} with {params:,} parameters")
    return create_model(name, **kwargs)
