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


def available_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2 ** 62  # unknown: nothing is refused


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
    except (RuntimeError, OverflowError, MemoryError) as exc:
        raise CnnlabError(f"{what}: its layers are too large to build ({str(exc).splitlines()[0][:100]})") from None
    ensure_fits(params * BYTES_PER_PARAMETER, device, f"{what} with {params:,} parameters")
    return create_model(name, **kwargs)
