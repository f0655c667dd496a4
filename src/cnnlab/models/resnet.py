"""ResNet for ImageNet-sized inputs (He et al. 2016), torchvision's v1.5: the stride sits in the 3x3 conv of
the bottleneck. With default switches, state_dict keys and shapes equal torchvision's `resnet18` ... `resnet152`.
`residual=False` removes the skip connections (a "plain" net of the same depth)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import center_crop, check_kernel_size, init_weights, make_activation, make_norm, scaled
from .registry import register_model

torch.fx.wrap("center_crop")  # a leaf for tracing (summaries): its shape arithmetic is not traceable


class PadShortcut(nn.Module):
    """Option A (the CIFAR ResNets): subsample by `stride` and zero-pad the new channels evenly on both
    sides, so the shortcut adds no parameters."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, k: int, bn: bool, activation: str, residual: bool,
                 shortcut: str = "projection", preact: bool = False, padding: int | None = None) -> None:
        super().__init__()
        pad = k // 2 if padding is None else padding  # 0: "valid" convs; the skip path is then center-cropped
        self.conv1 = nn.Conv2d(cin, planes, k, stride, pad, bias=not bn)
        self.bn1 = make_norm(cin if preact else planes, bn)
        self.relu = make_activation(activation)
        self.conv2 = nn.Conv2d(planes, planes, k, 1, pad, bias=not bn)
        self.bn2 = make_norm(planes, bn)
        self.downsample = _shortcut(cin, planes, stride, bn, shortcut) if residual else None
        self.residual, self.preact = residual, preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:  # He et al. 2016b: norm and activation before each conv; the skip path stays clean
            out = self.conv2(self.relu(self.bn2(self.conv1(self.relu(self.bn1(x))))))
            return out + self._skip(x, out) if self.residual else out
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self._skip(x, out)
        return self.relu(out)

    def _skip(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return center_crop(x if self.downsample is None else self.downsample(x), out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, k: int, bn: bool, activation: str, residual: bool) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=not bn)
        self.bn1 = make_norm(planes, bn)
        self.conv2 = nn.Conv2d(planes, planes, k, stride, k // 2, bias=not bn)
        self.bn2 = make_norm(planes, bn)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=not bn)
        self.bn3 = make_norm(out, bn)
        self.relu = make_activation(activation)
        self.downsample = _shortcut(cin, out, stride, bn) if residual else None
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


def _shortcut(cin: int, cout: int, stride: int, bn: bool, kind: str = "projection") -> nn.Module | None:
    """Identity where the shape stays; where it changes, option B (a 1x1 projection, torchvision's) or
    option A ("pad": subsample and zero-pad, He et al.'s CIFAR nets)."""
    if stride == 1 and cin == cout:
        return None
    if kind == "pad":
        return PadShortcut(cin, cout, stride)
    layers = [nn.Conv2d(cin, cout, 1, stride, bias=not bn)]
    return nn.Sequential(*layers, nn.BatchNorm2d(cout)) if bn else nn.Sequential(*layers)


class ResNet(nn.Module):
    min_input_size = 1  # global average pooling accepts any size; 32x32 or more is sensible

    def __init__(self, block: type, layers: list[int], num_classes: int = 1000, in_channels: int = 3,
                 bn: bool = True, kernel_size: int = 3, width: float = 1.0, activation: str = "relu",
                 residual: bool = True) -> None:
        super().__init__()
        k = check_kernel_size(kernel_size)
        stem = scaled(64, width)
        self.conv1 = nn.Conv2d(in_channels, stem, 7, 2, 3, bias=not bn)
        self.bn1 = make_norm(stem, bn)
        self.relu = make_activation(activation)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = stem
        for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(cin, scaled(planes, width), stride, k, bn, activation, residual))
                cin = scaled(planes, width) * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


_DEPTHS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3]),
           101: (Bottleneck, [3, 4, 23, 3]), 152: (Bottleneck, [3, 8, 36, 3])}


def _register(depth: int) -> None:
    block, layers = _DEPTHS[depth]

    def build(num_classes: int = 1000, in_channels: int = 3, bn: bool = True, kernel_size: int = 3,
              width: float = 1.0, activation: str = "relu", residual: bool = True) -> ResNet:
        return ResNet(block, layers, num_classes, in_channels, bn, kernel_size, width, activation, residual)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"ResNet-{depth} (ImageNet stem, {block.__name__} blocks, v1.5)."
    register_model("resnet")(build)


for _d in _DEPTHS:
    _register(_d)
