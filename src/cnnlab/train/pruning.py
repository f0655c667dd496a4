"""Dynamic data pruning, after InfoBatch (Qin et al., ICLR 2024): once the network fits an image well, training
on it again teaches little, so a pruned epoch leaves out a share of the images whose loss (when last trained
on) lies in the lower half, drawn at random, and weights the loss of the low-loss images it keeps up by as
much, so each epoch's expected gradient stays that of the full data. The first epoch trains on everything
(there is no loss yet), and so does the last eighth of the epochs (at least the last one), where the weights
settle on the full distribution. Each pruned epoch is shorter, so the run spends fewer FLOPs.

`Epochs` holds the step count of every epoch: with pruning they differ, and the loop finds an epoch's
boundaries there instead of in a fixed steps-per-epoch."""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from itertools import accumulate

import torch


def pruned(epoch: int, epochs: int) -> bool:
    """Whether 0-based `epoch` of `epochs` is pruned: not the first, not the last eighth (at least one)."""
    return 1 <= epoch < epochs - max(1, round(epochs / 8))


def dropped_count(images: int, prune: float) -> int:
    """Images a pruned epoch leaves out: `prune` of all of them, taken from the lower-loss half."""
    return max(0, min(int(prune * images), images // 2 - 1))  # at least one low-loss image stays


def epoch_lengths(images: int, batch: int, epochs: int, prune: float = 0.0) -> list[int]:
    """Optimiser steps of each epoch (the ragged last batch is dropped: batch norm needs full batches)."""
    left = images - dropped_count(images, prune)
    return [(left if prune and pruned(e, epochs) else images) // batch for e in range(epochs)]


@dataclass(frozen=True)
class Epochs:
    """Epoch boundaries in global optimiser steps."""
    lengths: list[int]
    ends: list[int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ends", list(accumulate(self.lengths)))

    @property
    def total(self) -> int:
        return self.ends[-1] if self.ends else 0

    def locate(self, step: int) -> tuple[int, int]:
        """Global step (0-based) -> (epoch, step within it)."""
        epoch = bisect.bisect_right(self.ends, step)
        return epoch, step - (self.ends[epoch - 1] if epoch else 0)

    def is_end(self, step: int) -> bool:
        """Whether `step` steps complete an epoch."""
        epoch = bisect.bisect_left(self.ends, step)
        return epoch < len(self.ends) and self.ends[epoch] == step

    def completed(self, step: int) -> int:
        """Epochs that `step` steps have completed."""
        return bisect.bisect_right(self.ends, step)


def epoch_order(images: int, epoch: int, epochs: int, seed: int, prune: float, losses: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The images of `epoch` in the order they train, and each image's loss weight (None: all 1). Depends only
    on (seed, epoch) and the losses at the epoch's start, so a resumed run, and every rank, draws the same."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if not (prune and pruned(epoch, epochs)):
        return torch.randperm(images, generator=generator), None
    losses = losses.float().cpu()
    low = torch.argsort(losses, stable=True)[:images // 2]  # never-seen images have loss inf: always kept
    drop = dropped_count(images, prune)
    left_out = low[torch.randperm(len(low), generator=generator)[:drop]]
    weight = torch.ones(images)
    weight[low] = len(low) / (len(low) - drop)
    weight[left_out] = 0.0
    kept = torch.nonzero(weight).squeeze(1)
    return kept[torch.randperm(len(kept), generator=generator)], weight
