"""Data as device tensors: uint8 images resized once, normalised per batch on the device (airbench's way,
no DataLoader in the hot loop)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_device(images: np.ndarray, labels: np.ndarray, size: int, device: torch.device,
              chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W, C) uint8 -> (N, C, size, size) uint8 on `device`, resized (bilinear) if needed."""
    x = torch.from_numpy(np.require(images, np.uint8, ["C", "W"])).permute(0, 3, 1, 2)  # copies read-only maps
    if x.shape[-2:] != (size, size):
        parts = []
        for i in range(0, len(x), chunk):
            part = x[i:i + chunk].float()
            antialias = size < x.shape[-1]
            part = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
            parts.append(part.round_().clamp_(0, 255).to(torch.uint8))
        x = torch.cat(parts) if parts else x.new_zeros((0, x.shape[1], size, size))
    x = x.contiguous(memory_format=torch.channels_last).to(device)
    return x, torch.from_numpy(np.array(labels, dtype=np.int64)).to(device)  # a copy: cached arrays are read-only


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units, for normalisation."""
    flat = np.asarray(images).reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return flat.mean(0).tolist(), np.maximum(flat.std(0), 1e-3).tolist()


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Batch in [0, 255] (uint8, or float after augmentation) -> zero mean and unit variance per channel.
    A float input is left as it was: only the fresh copy `float()` makes of a uint8 batch is divided in place."""
    y = x.float()
    y = y.div_(255.0) if y is not x else y / 255.0
    return (y - mean) / std
