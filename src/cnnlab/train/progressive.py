"""Progressive resizing: the first epochs train on downscaled images, where a conv net's work falls with the
square of the side (24x24 costs 0.56 of 32x32), and the last epochs at full size, so the batch-norm statistics
and the weights end where they are evaluated. Also the count of training FLOPs a run spent."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import CnnlabError

FLOPS_PER_MAC_STEP = 6  # 2 FLOPs per multiply-add, forward plus a backward pass of about twice its work


def parse_plan(text: str, epochs: int) -> list[tuple[int, int]]:
    """'16:2,24:3' -> [(16, 2), (24, 3)]: 2 epochs at 16x16, then 3 at 24x24. A share of the run's `epochs`
    ('16:20%,24:40%') ends at the epoch its running total reaches, rounded down, so a recipe's plan fits a run
    of any length (at 1 epoch, nothing of it is left)."""
    plan, done, share = [], 0, 0.0
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        size, sep, length = (t.strip() for t in item.partition(":"))
        percent = length.endswith("%")
        number = length[:-1] if percent else length
        if not (sep and size.isdigit() and number.replace(".", "", 1).isdigit() and (percent or number.isdigit())):
            raise CnnlabError(f"--progressive: expected SIZE:EPOCHS or SIZE:PERCENT% items such as 16:2,24:3 or "
                              f"16:20%,24:40%, got '{item}'")
        if int(size) < 1 or float(number) <= 0:
            raise CnnlabError(f"--progressive: sizes and lengths must be positive, got '{item}'")
        if percent:
            share += float(number) / 100
            n = int(share * epochs + 1e-9) - done
        else:
            n = int(number)
        done += n
        if n > 0:
            plan.append((int(size), n))
    return plan


def check_sizes(plan: list[tuple[int, int]], full: int, minimum: int) -> None:
    """The sizes against the model and the data (that the plan leaves epochs at full size, TrainConfig checks)."""
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


def crop(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """A random size x size window of each image of a batch (`--progressive-crop`): the objects keep the scale
    evaluation sees at full size, where downscaling shrinks them."""
    n, _, h, w = x.shape
    if h == size and w == size:
        return x
    top = torch.randint(0, h - size + 1, (n,), generator=gen).to(x.device)
    left = torch.randint(0, w - size + 1, (n,), generator=gen).to(x.device)
    side = torch.arange(size, device=x.device)
    rows, cols = (top[:, None] + side)[:, :, None], (left[:, None] + side)[:, None, :]
    # advanced indices on either side of the channel slice put the batch and spatial dims first: (n, s, s, c)
    return x[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2).contiguous()


def training_flops(plan: list[tuple[int, int]], full: int, lengths: list[int], steps: int, batch: int,
                   macs_at) -> float:
    """FLOPs of the first `steps` optimiser steps of epochs `lengths` steps long: per image, 6 x the model's
    multiply-adds at the size it trained at."""
    total = 0.0
    for epoch, length in enumerate(lengths):
        n = min(length, steps)
        total += n * batch * FLOPS_PER_MAC_STEP * macs_at(size_at(plan, epoch, full))
        steps -= n
    return total
