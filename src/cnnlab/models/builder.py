"""A CNN described by data, the form architecture search produces and `cnnlab train --model-config` reads:

    arch = {"stages": [{"blocks": 2, "width": 32, "kernel": 3}, {"blocks": 2, "width": 64, "kernel": 3}],
            "downsample": "pool",      # between stages: "pool" (2x2 max-pool) or "stride" (stride-2 first conv)
            "skip": True,              # residual connections in every block
            "bn": True, "activation": "relu",
            "head": {"type": "gap"},   # or {"type": "fc", "widths": [256, 128]}: flatten a 4x4 map into FC layers
            "padding": "same",         # or "valid": no zero padding, each conv shrinks the map by kernel - 1
            "group": "none"}           # or "p4" / "p4m": group-equivariant convolutions (models/equivariant.py)
    model = create_model("cnn", num_classes=10, arch=arch)

Blocks are the ResNet basic blocks (two convs), so a stage of VGG-like plain blocks and one of ResNet blocks
differ only by the `skip` switch. With a `group`, every conv is a group conv with the stage's width divided by
sqrt(|G|) (about the same parameters, |G| times the multiply-adds), and the features are max-pooled over
orientations (and, for an fc head too, over space) before the head: the network is invariant to 90-degree
rotations (and mirrors, p4m) by construction, exactly so at input sizes where `cnnlab summary` gives no
equivariance warning."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import CnnlabError
from .equivariant import GROUPS, GroupBatchNorm, GroupPool, LiftingConv, group_width
from .gcnn import GroupBlock
from .layers import check_kernel_size, init_weights, make_activation, make_norm
from .registry import register_model
from .resnet import BasicBlock

DEFAULT_ARCH = {"stages": [{"blocks": 1, "width": 32, "kernel": 3}, {"blocks": 1, "width": 64, "kernel": 3}],
                "downsample": "pool", "skip": True, "bn": True, "activation": "relu", "head": {"type": "gap"},
                "padding": "same", "group": "none"}
FLATTEN_SIZE = 4  # the fc head pools the last map to 4x4 before flattening, whatever the input size
# the upper bounds of an arch (the search space takes them too): past them the model could not be built, or
# checking it would take minutes
MAX_STAGES, MAX_BLOCKS, MAX_WIDTH, MAX_KERNEL, MAX_FC_WIDTH = 16, 100, 16384, 63, 65536
STAGE_KEYS = {"blocks", "width", "kernel"}


def _whole(v, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= hi


def check_arch(arch) -> None:
    """Refuse in one line an arch with keys it does not know or counts past the bounds, before anything is
    counted or built (a million blocks would take minutes, then the memory)."""
    if not isinstance(arch, dict):
        raise CnnlabError(f"arch must be a mapping, got {type(arch).__name__}")
    unknown = sorted(set(arch) - set(DEFAULT_ARCH))
    if unknown:
        raise CnnlabError(f"arch: unknown key '{unknown[0]}'; known: {', '.join(DEFAULT_ARCH)}")
    stages = arch.get("stages", DEFAULT_ARCH["stages"])
    if not isinstance(stages, list) or not 1 <= len(stages) <= MAX_STAGES:
        raise CnnlabError(f"arch: 'stages' must be a list of 1 to {MAX_STAGES} stages")
    for i, stage in enumerate(stages, 1):
        if not isinstance(stage, dict) or not {"blocks", "width"} <= set(stage) <= STAGE_KEYS:
            raise CnnlabError(f"arch: stage {i} must be a mapping of blocks, width and (optionally) kernel, "
                              f"got {str(stage)[:80]}")
        if not (_whole(stage["blocks"], MAX_BLOCKS) and _whole(stage["width"], MAX_WIDTH)
                and _whole(stage.get("kernel", 3), MAX_KERNEL)):
            raise CnnlabError(f"arch: stage {i} needs 1 to {MAX_BLOCKS} blocks, a width of 1 to {MAX_WIDTH} and a "
                              f"kernel of 1 to {MAX_KERNEL}, got {str(stage)[:80]}")
    head = arch.get("head", DEFAULT_ARCH["head"])
    if not isinstance(head, dict):
        raise CnnlabError(f"arch: 'head' must be a mapping such as {{type: gap}}, got {str(head)[:80]}")
    widths = head.get("widths", [])
    if not isinstance(widths, list) or not all(_whole(w, MAX_FC_WIDTH) for w in widths):
        raise CnnlabError(f"arch: the head's widths must be whole numbers from 1 to {MAX_FC_WIDTH}, got "
                          f"{str(widths)[:80]}")


class ConfigurableCNN(nn.Module):
    def __init__(self, arch: dict, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        check_arch(arch)
        arch = {**DEFAULT_ARCH, **arch}
        stages, head = arch["stages"], arch["head"]
        if not stages or not all(isinstance(s, dict) and {"blocks", "width"} <= set(s) for s in stages):
            raise CnnlabError("arch: 'stages' must be a non-empty list of {blocks, width, kernel} mappings")
        if arch["downsample"] not in ("pool", "stride"):
            raise CnnlabError(f"arch: downsample must be pool or stride, got {arch['downsample']!r}")
        if arch["padding"] not in ("same", "valid"):
            raise CnnlabError(f"arch: padding must be same or valid, got {arch['padding']!r}")
        bn, act, skip, group = bool(arch["bn"]), arch["activation"], bool(arch["skip"]), arch["group"]
        if group not in ("none", *GROUPS):
            raise CnnlabError(f"arch: group must be none, {' or '.join(GROUPS)}, got {group!r}")
        if group != "none":
            stages = [{**st, "width": group_width(st["width"], 1.0, group)} for st in stages if isinstance(st, dict)]
        first = stages[0]
        k0 = check_kernel_size(first.get("kernel", 3))
        pad = None if arch["padding"] == "same" else 0  # None: kernel // 2
        if group == "none":
            stem = [nn.Conv2d(in_channels, first["width"], k0, 1, k0 // 2 if pad is None else 0, bias=not bn),
                    make_norm(first["width"], bn)]
        else:
            stem = [LiftingConv(in_channels, first["width"], k0, group, bias=not bn, padding=pad),
                    GroupBatchNorm(first["width"], group) if bn else nn.Identity()]
        layers: list[nn.Module] = [*stem, make_activation(act)]
        cin = first["width"]
        for i, stage in enumerate(stages):
            k = check_kernel_size(stage.get("kernel", 3))
            if stage["blocks"] < 1 or stage["width"] < 1:
                raise CnnlabError(f"arch: stage {i + 1} needs at least 1 block and 1 channel, got {stage}")
            down = i > 0
            if down and arch["downsample"] == "pool":
                layers.append(nn.MaxPool2d(2))
            for j in range(stage["blocks"]):
                stride = 2 if down and j == 0 and arch["downsample"] == "stride" else 1
                layers.append(BasicBlock(cin, stage["width"], stride, k, bn, act, skip, padding=pad) if group == "none"
                              else GroupBlock(cin, stage["width"], stride, k, group, bn, act, skip, pad))
                cin = stage["width"]
        if group != "none":
            layers.append(GroupPool(group))  # max over orientations: invariant features for the head
        self.features = nn.Sequential(*layers)
        self.min_input_size = min_input_size(arch)
        if head.get("type", "gap") == "gap":
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
        elif head["type"] == "fc":
            widths = list(head.get("widths", []))
            if not 1 <= len(widths) <= 3:
                raise CnnlabError(f"arch: an fc head has 1 to 3 hidden layers, got {widths}")
            side = FLATTEN_SIZE if group == "none" else 1  # a flattened map would remember which way is up
            fc: list[nn.Module] = [nn.AdaptiveAvgPool2d(side), nn.Flatten()]
            n = cin * side ** 2
            for w in widths:
                fc += [nn.Linear(n, w), make_activation(act)]
                n = w
            self.head = nn.Sequential(*fc, nn.Linear(n, num_classes))
        else:
            raise CnnlabError(f"arch: head type must be gap or fc, got {head.get('type')!r}")
        init_weights(self, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _output_size(arch: dict, size: int) -> int:
    """The side of the last feature map for a `size` input (0 or less: some layer gets nothing), by the conv
    and pooling arithmetic alone, so impossible architectures are caught before anything is built."""
    valid = arch.get("padding", "same") == "valid"
    stages = arch["stages"]
    size -= stages[0].get("kernel", 3) - 1 if valid else 0  # the stem
    for i, stage in enumerate(stages):
        k = stage.get("kernel", 3)
        for j in range(stage["blocks"]):
            if size < 1:
                return size
            down = i > 0 and j == 0
            if down and arch.get("downsample", "pool") == "pool":
                size //= 2
            stride = 2 if down and arch.get("downsample", "pool") == "stride" else 1
            pad = 0 if valid else k // 2
            size = (size + 2 * pad - k) // stride + 1  # conv1
            size = size + 2 * pad - k + 1  # conv2
    return size


def min_input_size(arch: dict) -> int:
    """The smallest square input every layer of `arch` can take."""
    check_arch(arch)
    arch = {**DEFAULT_ARCH, **arch}
    return next(s for s in range(1, 1 << 16) if _output_size(arch, s) >= 1)


@register_model("searched")
def cnn(num_classes: int = 10, in_channels: int = 3, arch: dict = DEFAULT_ARCH) -> ConfigurableCNN:
    """A CNN described by an `arch` mapping (stages of blocks, widths, kernels, downsampling, skips, BN,
    activation, head): what `cnnlab search` explores and exports."""
    return ConfigurableCNN(arch, num_classes, in_channels)
