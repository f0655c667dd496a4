"""Progressive training. Resizing: the first epochs train on downscaled images, where a conv net's work falls
with the square of the side (24x24 costs 0.56 of 32x32), and the last epochs at full size, so the batch-norm
statistics and the weights end where they are evaluated. Freezing (after FreezeOut, Brock et al. 2017): from
a given epoch on, the first layers stop training, and the backward pass stops short of them; with a learning
rate that decays to zero, the late epochs would move them little anyway. Also the count of training FLOPs a
run spent."""
from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CnnlabError

def parse_plan(text: str, epochs: int) -> list[tuple[int, int]]:
    """'16:2,24:3' -> [(16, 2), (24, 3)]: 2 epochs at 16x16, then 3 at 24x24. A share of the run's `epochs`
    ('16:20%,24:40%') ends at the epoch its running total reaches, rounded down, so a recipe's plan fits a run
    of any length (at 1 epoch, nothing of it is left)."""
    plan, done, share = [], 0, 0.0
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        size, sep, length = (t.strip() for t in item.partition(":"))
        percent = length.endswith("%")
        number = length[:-1] if percent else length
        if not (sep and _is_number(size, whole=True) and _is_number(number, whole=not percent)):
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


def parse_freezing(text: str, epochs: int) -> list[tuple[int, int]]:
    """'7:3,9:5' -> [(7, 3), (9, 5)]: from epoch 7 (1-based) on, the first 3 conv/linear layers are frozen,
    from epoch 9 on the first 5. Epochs rise, and so do the layer counts: a frozen layer stays frozen. A share
    ('28%:1') freezes them after that share of the run's `epochs`, rounded down (of 11 epochs: from epoch 4)."""
    schedule: list[tuple[int, int]] = []
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        epoch, sep, layers = (t.strip() for t in item.partition(":"))
        share = epoch[:-1] if epoch.endswith("%") else None
        when = _is_number(epoch, whole=True) if share is None else _is_number(share)
        if not (sep and when and _is_number(layers, whole=True)):
            raise CnnlabError(f"--freeze-from: expected EPOCH:LAYERS or PERCENT%:LAYERS items such as 7:3,9:5 or "
                              f"28%:1, got '{item}'")
        if share is not None and not float(share) < 100:
            raise CnnlabError(f"--freeze-from: '{item}' needs a share below 100% (the last epoch trains it)")
        e = int(float(share) / 100 * epochs + 1e-9) + 1 if share is not None else int(epoch)
        n = int(layers)
        if not 1 <= e <= epochs or n < 1:
            raise CnnlabError(f"--freeze-from: '{item}' needs an epoch in 1..{epochs} and at least 1 layer")
        if schedule and not (e > schedule[-1][0] and n > schedule[-1][1]):
            raise CnnlabError(f"--freeze-from: '{item}' must come at a later epoch and freeze more layers than "
                              f"the item before it (a frozen layer stays frozen)")
        schedule.append((e, n))
    return schedule


def _is_number(text: str, whole: bool = False) -> bool:
    """A plain ASCII number such as 28 (or, unless `whole`, 27.5): no sign, exponent, nan, inf, '_' or digits
    of other scripts, all of which float() would take."""
    return re.fullmatch(r"[0-9]+" if whole else r"[0-9]+(\.[0-9]+)?", text) is not None


def frozen_at(schedule: list[tuple[int, int]], epoch: int) -> int:
    """The number of first layers frozen in 0-based `epoch`."""
    return max((n for e, n in schedule if epoch + 1 >= e), default=0)


def gradient_flow(model: nn.Module, trainable: set[int]) -> dict[str, tuple[bool, bool]]:
    """Each layer of `model`'s dataflow graph -> (whether its weights get a gradient, whether its input does)
    when the parameters whose ids are in `trainable` train. Autograd computes an input's gradient only where
    something trainable lies upstream of it, so the first layer never does (its input is the data), nor the
    first one after a frozen start; a weight that does not train (airbench's whitening filters) has none."""
    from ..models.summary import dataflow

    params = dict(model.named_parameters())
    carries: dict = {}  # node -> whether its output carries a gradient back to something trainable
    flow: dict[str, tuple[bool, bool]] = {}
    for node in dataflow(model).graph.nodes:
        upstream = any(carries.get(a, False) for a in node.all_input_nodes)
        own: list = []
        if node.op == "get_attr" and node.target in params:
            own = [params[node.target]]
        elif node.op == "call_module":
            own = list(model.get_submodule(node.target).parameters())
            weights = any(id(p) in trainable for p in own if p.ndim > 1)
            before = flow.get(node.target, (False, False))  # a layer called twice: either call's work
            flow[node.target] = (weights or before[0], upstream or before[1])
        carries[node] = upstream or any(id(p) in trainable for p in own)
    return flow


def epoch_flops(model: nn.Module, rows_at: dict, plan: list[tuple[int, int]], full: int,
                freezing: list[tuple[int, int]], epochs: int) -> list[float]:
    """Each epoch's training FLOPs per image: of every layer in the model's summary rows at the epoch's size
    (`rows_at`: size -> ModelSummary.layers), 2 FLOPs per multiply-add forward, 2 more for its weights'
    gradient and 2 for its input's where autograd computes them (`gradient_flow`) with the first layers frozen
    then (`freezing`). Rows the graph cannot tie to a layer count as fully trained."""
    from .finetune import parameter_layers

    layers = parameter_layers(model)
    flows: dict[int, dict] = {}
    flops = []
    for epoch in range(epochs):
        frozen = frozen_at(freezing, epoch)
        if frozen not in flows:
            flows[frozen] = gradient_flow(model, {id(p) for name, p in model.named_parameters()
                                                  if p.requires_grad and layers[name] > frozen})
        rows = rows_at[size_at(plan, epoch, full)]
        flops.append(sum(r.macs * (2 + 2 * sum(flows[frozen].get(r.name, (True, True)))) for r in rows))
    return flops


def training_flops(lengths: list[int], steps: int, batch: int, flops_per_image: list[float]) -> float:
    """FLOPs of the first `steps` optimiser steps of epochs `lengths` steps long, each image of epoch e costing
    `flops_per_image[e]` (`epoch_flops`)."""
    total = 0.0
    for length, flops in zip(lengths, flops_per_image):
        n = min(length, steps)
        total += n * batch * flops
        steps -= n
    return total
