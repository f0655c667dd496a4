"""Progressive resizing: the first epochs train on downscaled images, where a conv net's work falls with the
square of the side (24x24 costs 0.56 of 32x32), and the last epochs at full size, so the batch-norm statistics
and the weights end where they are evaluated. Also the count of training FLOPs a run spent."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import CnnlabError

FLOPS_PER_MAC_STEP = 6  # 2 FLOPs per multiply-add, forward plus a backward pass of about twice its work


def parse_plan(text: str) -> list[tuple[int, int]]:
    """'16:2,24:3' -> [(16, 2), (24, 3)]: 2 epochs at 16x16, then 3 at 24x24."""
    plan = []
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        size, sep, epochs = item.partition(":")
        if not (sep and size.strip().isdigit() and epochs.strip().isdigit()):
            raise CnnlabError(f"--progressive: expected SIZE:EPOCHS items such as 16:2,24:3, got '{item}'")
        if int(size) < 1 or int(epochs) < 1:
            raise CnnlabError(f"--progressive: size and epochs must be at least 1, got '{item}'")
        plan.append((int(size), int(epochs)))
    return plan


def check_plan(plan: list[tuple[int, int]], epochs: int, full: int, minimum: int) -> None:
    if sum(e for _, e in plan) >= epochs:
        raise CnnlabError(f"--progressive covers {sum(e for _, e in plan)} of the {epochs} epochs; leave at least "
                          f"the last at full size ({full}x{full})")
    for size, _ in plan:
        if not minimum <= size <= full:
            raise CnnlabError(f"--progressive: size {size} is outside {minimum}..{full} (the model's smallest "
                              f"input .. the training size)")


def size_at(plan: list[tuple[int, int]], epoch: int, full: int) -> int:
    """The side length epoch `epoch` (0-based) trains at."""
    for size, epochs in plan:
        if epoch < epochs:
            return size
        epoch -= epochs
    return full


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """A normalised batch downscaled with an antialiased filter (no aliasing of the fine texture)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def training_flops(plan: list[tuple[int, int]], full: int, steps: int, steps_per_epoch: int, batch: int,
                   macs_at) -> float:
    """FLOPs of `steps` optimiser steps: per image, 6 x the model's multiply-adds at the size it trained at."""
    total = 0.0
    for epoch in range((steps + steps_per_epoch - 1) // steps_per_epoch):
        n = min(steps_per_epoch, steps - epoch * steps_per_epoch)
        total += n * batch * FLOPS_PER_MAC_STEP * macs_at(size_at(plan, epoch, full))
    return total
